"""A warehouse created from the DDL has the catalogue's columns (utils.catalog.warehouse) with their types."""
import pyarrow as pa

from utils.catalog.warehouse import WAREHOUSE_SCHEMAS, WAREHOUSE_TABLES
from utils.load.schema import schema_statements
from tests.support.db import run_sql

RECORD_IDS = {"fact_sales_order": "sales_record_id", "fact_purchase_order": "purchase_record_id",
              "fact_payment": "payment_record_id"}


def test_a_created_warehouse_has_exactly_the_catalogue_columns_with_their_types(warehouse_url):
    for statement in schema_statements():
        run_sql(warehouse_url, statement)
    rows = run_sql(warehouse_url,
                   "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length, "
                   "numeric_precision, numeric_scale, datetime_precision FROM information_schema.columns "
                   "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
    found = {}
    for table, column, *kind in rows:
        found.setdefault(table, {})[column] = tuple(kind)
    expected_sql = {
        pa.int32(): ("integer", None, 32, 0, None),
        pa.string(): ("character varying", None, None, None, None),
        pa.date32(): ("date", None, None, None, 0), pa.time64("us"): ("time without time zone", None, None,
                                                                      None, 3),
        pa.decimal128(10, 2): ("numeric", None, 10, 2, None), pa.bool_(): ("boolean", None, None, None, None)}
    for table in WAREHOUSE_TABLES:
        # the fact tables add their record id and load order; the rest of the columns are the catalogue's
        extra = [column for column in found[table] if column not in WAREHOUSE_SCHEMAS[table].names]
        assert extra == ([] if table.startswith("dim_") else [RECORD_IDS[table], "etl_load_order"])
        for field in WAREHOUSE_SCHEMAS[table]:
            data_type, nullable, length, precision, scale, time_precision = found[table][field.name]
            assert (data_type, length, precision, scale, time_precision) == expected_sql[field.type], \
                (table, field.name)
            assert nullable == ("YES" if field.nullable else "NO"), (table, field.name)
