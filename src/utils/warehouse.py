"""Seed interface ``warehouse``: the star schema's Arrow schemas (``utils.catalog.warehouse``) and the
pure functions that build its tables (``utils.transform.star``), under one name."""
from utils.catalog.warehouse import (DIMENSIONS, FACTS, PROCESSED_SCHEMAS, SNAPSHOT_TABLES, VERSION_COLUMN,
                                     VERSIONED_DIMENSIONS, WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS,
                                     WAREHOUSE_SOURCES, WAREHOUSE_TABLES)
from utils.transform.star import (build_warehouse_batch, dim_counterparty, dim_currency, dim_date,
                                  dim_design, dim_location, dim_payment_type, dim_staff, dim_transaction,
                                  distinct_versions, fact_dates, fact_payment, fact_purchase_order,
                                  fact_sales_order, latest_rows, merge_snapshot, text_to_date)

__all__ = ["DIMENSIONS", "FACTS", "PROCESSED_SCHEMAS", "SNAPSHOT_TABLES", "VERSION_COLUMN",
           "VERSIONED_DIMENSIONS", "WAREHOUSE_KEYS", "WAREHOUSE_SCHEMAS", "WAREHOUSE_SOURCES",
           "WAREHOUSE_TABLES", "build_warehouse_batch", "dim_counterparty", "dim_currency", "dim_date",
           "dim_design", "dim_location", "dim_payment_type", "dim_staff", "dim_transaction",
           "distinct_versions", "fact_dates", "fact_payment", "fact_purchase_order", "fact_sales_order",
           "latest_rows", "merge_snapshot", "text_to_date"]
