"""Compatibility name of ``utils.catalog.source`` (the source tables' allow-list and Arrow schemas)."""
from utils.catalog.source import (INFINITY_MS, LANDING_SCHEMAS, PRIMARY_KEYS, SOURCE_SCHEMAS, SOURCE_TABLES,
                                  check_source_table)

__all__ = ["INFINITY_MS", "LANDING_SCHEMAS", "PRIMARY_KEYS", "SOURCE_SCHEMAS", "SOURCE_TABLES",
           "check_source_table"]
