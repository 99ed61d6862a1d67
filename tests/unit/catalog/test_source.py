"""The source catalogue (utils.catalog.source): the eleven tables, their schemas, any other name refused; the
landing schema and the optional columns."""
import pyarrow as pa
import pytest

from utils.catalog import source
from utils.catalog.source import SOURCE_SCHEMAS, SOURCE_TABLES, check_source_table
from utils.errors import UnknownTableError


def test_eleven_source_tables_with_schemas():
    assert len(SOURCE_TABLES) == 11 and set(SOURCE_TABLES) == set(SOURCE_SCHEMAS)
    assert str(SOURCE_SCHEMAS["sales_order"].field("unit_price").type) == "decimal128(10, 2)"
    assert check_source_table("payment") == "payment"


@pytest.mark.parametrize("bad", ["_prisma_migrations", "address; DROP TABLE staff", "", None, 3])
def test_unknown_tables_rejected(bad):
    with pytest.raises(UnknownTableError, match="unknown table"):
        check_source_table(bad)


def test_the_landing_schema_has_the_source_columns_all_nullable():
    landing = source.landing_schema(source.SOURCE_SCHEMAS["address"])
    assert landing.names == source.SOURCE_SCHEMAS["address"].names
    assert [field.type for field in landing] == [field.type for field in source.SOURCE_SCHEMAS["address"]]
    assert all(field.nullable for field in landing)
    assert landing == source.LANDING_SCHEMAS["address"]
    assert not source.SOURCE_SCHEMAS["address"].field("city").nullable
    assert source.landing_schema(pa.schema([])) == pa.schema([])


def test_the_optional_columns_of_a_source_table_are_its_nullable_ones():
    assert source.optional_columns("address") == ("address_line_2", "district")
    assert source.optional_columns("design") == ()
