"""utils.catalog.source: the eleven source tables, their schemas, any other name refused."""
import pytest

from utils.errors import UnknownTableError
from utils.catalog.source import SOURCE_SCHEMAS, SOURCE_TABLES, check_source_table


def test_eleven_source_tables_with_schemas():
    assert len(SOURCE_TABLES) == 11 and set(SOURCE_TABLES) == set(SOURCE_SCHEMAS)
    assert str(SOURCE_SCHEMAS["sales_order"].field("unit_price").type) == "decimal128(10, 2)"
    assert check_source_table("payment") == "payment"


@pytest.mark.parametrize("bad", ["_prisma_migrations", "address; DROP TABLE staff", "", None, 3])
def test_unknown_tables_rejected(bad):
    with pytest.raises(UnknownTableError, match="unknown table"):
        check_source_table(bad)
