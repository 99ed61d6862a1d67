"""conform_table: a file written before a nullable column was added to the catalogue (docs/DESIGN.md,
"Adding a column")."""
import pyarrow as pa
import pytest

from utils.aws.objects import conform_table
from utils.errors import SchemaMismatchError

COLOUR = pa.field("colour", pa.string(), nullable=True)
OLD_FILE = pa.table({"design_id": pa.array([1, 2], pa.int32()), "design_name": ["Wooden", "Bamboo"]})
WITH_COLOUR = pa.schema([pa.field("design_id", pa.int32(), nullable=False),
                         pa.field("design_name", pa.string(), nullable=False), COLOUR])


def test_a_nullable_column_the_file_lacks_reads_as_nulls_when_named():
    table = conform_table(OLD_FILE, "design", WITH_COLOUR, missing_as_null=("colour",))
    assert table.schema == WITH_COLOUR
    assert table.column("colour").to_pylist() == [None, None]


@pytest.mark.parametrize("schema, missing_as_null, column", [
    (WITH_COLOUR, (), "colour"),  # not named: a file that lacks a column is refused
    (WITH_COLOUR.set(2, COLOUR.with_nullable(False)), ("colour",), "colour"),  # a NOT NULL one, always
])
def test_a_column_the_file_lacks_is_refused_unless_nullable_and_named(schema, missing_as_null, column):
    with pytest.raises(SchemaMismatchError, match=f"column '{column}' is missing from old.parquet"):
        conform_table(OLD_FILE, "design", schema, "old.parquet", missing_as_null)
