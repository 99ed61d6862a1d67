"""utils.aws.manifests.walk_manifests: the one walk along a prev_manifest_key chain."""
import pytest

from utils.aws.manifests import walk_manifests
from utils.errors import CorruptFileError

# m3 -> m2 -> m1 (the oldest)
CHAIN = {"m1": {"batch_id": "b1", "prev_manifest_key": None},
         "m2": {"batch_id": "b2", "prev_manifest_key": "m1"},
         "m3": {"batch_id": "b3", "prev_manifest_key": "m2"}}


def read_from(manifests, reads=None):
    def read(key):
        if reads is not None:
            reads.append(key)
        return manifests[key]
    return read


def test_the_whole_chain_oldest_first():
    chain, end = walk_manifests(read_from(CHAIN), "m3")
    assert [key for key, _ in chain] == ["m1", "m2", "m3"] and end is None
    assert chain[0][1]["batch_id"] == "b1"
    assert walk_manifests(read_from(CHAIN), None) == ([], None)


def test_until_key_is_not_read_and_is_the_end():
    reads = []
    chain, end = walk_manifests(read_from(CHAIN, reads), "m3", until_key="m1")
    assert [key for key, _ in chain] == ["m2", "m3"] and end == "m1" and reads == ["m3", "m2"]
    assert walk_manifests(read_from(CHAIN), "m3", until_key="m3") == ([], "m3")
    # A key the chain never reaches: the walk runs out (end None), which the caller treats as corrupt.
    assert walk_manifests(read_from(CHAIN), "m3", until_key="elsewhere")[1] is None


def test_stop_is_asked_after_reading_and_its_manifest_is_left_out():
    chain, end = walk_manifests(read_from(CHAIN), "m3", stop=lambda _, m: m["batch_id"] == "b2")
    assert [key for key, _ in chain] == ["m3"] and end == "m2"


def test_a_chain_that_loops_is_corrupt():
    looping = dict(CHAIN, m1={"batch_id": "b1", "prev_manifest_key": "m3"})
    with pytest.raises(CorruptFileError, match="manifest chain loops at m3") as err:
        walk_manifests(read_from(looping), "m3")
    assert err.value.key == "m3"
