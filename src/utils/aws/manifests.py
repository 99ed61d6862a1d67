"""Batch manifests: the JSON objects that name a batch's files and link to the previous batch."""
from utils.aws.objects import read_json
from utils.errors import CorruptFileError


def read_manifest(s3_client, bucket_name, key, check_table, required):
    """Read a batch manifest and check its shape: the string field ``required`` is present, and
    ``tables`` maps names accepted by ``check_table`` to entries holding a file ``key``.
    Raises CorruptFileError naming the manifest (or the check's own error for an unknown table)."""
    manifest = read_json(s3_client, bucket_name, key)
    tables = manifest.get("tables")
    if not isinstance(manifest.get(required), str) or not isinstance(tables, dict):
        raise CorruptFileError(f"manifest {key} lacks {required} or tables", key=key)
    for name, entry in tables.items():
        check_table(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise CorruptFileError(f"manifest {key}: entry of {name!r} has no file key", key=key, table=name)
    return manifest
