"""The source catalogue's helpers (utils.catalog.source)."""
import pyarrow as pa

from utils.catalog import source


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
