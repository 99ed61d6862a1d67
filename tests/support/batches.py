"""Helpers (no tests): hand-written source rows and ingest batches in the documented format.

``write_ingest_batch`` writes what the ingest stage writes: one Parquet file per table with the
landing schema (source types, all nullable), the manifest ``_batches/...json`` chained by
``prev_manifest_key``, and the state pointer ``_state/ingest.json`` naming it (CAS).
"""
import json
from datetime import datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from utils.format_time import format_time
from utils.generate_file_key import generate_file_key
from utils.compat import parquet_data
from utils.aws.state import read_state, write_state
from utils.catalog.source import LANDING_SCHEMAS, SOURCE_SCHEMAS

T0 = datetime(2024, 11, 25, 9, 30, 15, 123000)


def source_table(name, rows):
    """A pyarrow Table of ``rows`` (dicts) with the explicit source schema of ``name``."""
    return pa.Table.from_pylist(rows, schema=SOURCE_SCHEMAS[name])


def stamps(created, updated=None):
    return {"created_at": created, "last_updated": updated or created}


def address(address_id, at=T0, **changes):
    row = {"address_id": address_id, "address_line_1": f"{address_id} High Street", "address_line_2": None,
           "district": None, "city": "Leeds", "postal_code": f"LS{address_id} 1AA", "country": "UK",
           "phone": f"0113 000 000{address_id}", **stamps(at)}
    row.update(changes)
    return row


def counterparty(counterparty_id, address_id, at=T0, **changes):
    row = {"counterparty_id": counterparty_id, "counterparty_legal_name": f"Client {counterparty_id} Ltd",
           "legal_address_id": address_id, "commercial_contact": "Ann", "delivery_contact": None,
           **stamps(at)}
    row.update(changes)
    return row


def department(department_id, at=T0, **changes):
    row = {"department_id": department_id, "department_name": f"Dept {department_id}",
           "location": "Manchester", "manager": "Bo", **stamps(at)}
    row.update(changes)
    return row


def staff(staff_id, department_id, at=T0, **changes):
    row = {"staff_id": staff_id, "first_name": f"First{staff_id}", "last_name": "Last",
           "department_id": department_id, "email_address": f"first{staff_id}.last@terrifictotes.com",
           **stamps(at)}
    row.update(changes)
    return row


def sales_order(order_id, at=T0, updated=None, **changes):
    row = {"sales_order_id": order_id, **stamps(at, updated), "design_id": 1, "staff_id": 1,
           "counterparty_id": 1, "units_sold": 1000 + order_id, "unit_price": Decimal("2.50"),
           "currency_id": 1, "agreed_delivery_date": "2024-11-28", "agreed_payment_date": "2024-11-30",
           "agreed_delivery_location_id": 2}
    row.update(changes)
    return row


def purchase_order(order_id, at=T0, updated=None, **changes):
    row = {"purchase_order_id": order_id, **stamps(at, updated), "staff_id": 2, "counterparty_id": 2,
           "item_code": "ABC1234", "item_quantity": 10, "item_unit_price": Decimal("100.00"),
           "currency_id": 2, "agreed_delivery_date": "2024-12-02", "agreed_payment_date": "2024-12-01",
           "agreed_delivery_location_id": 1}
    row.update(changes)
    return row


def payment(payment_id, transaction_id, at=T0, updated=None, **changes):
    row = {"payment_id": payment_id, **stamps(at, updated), "transaction_id": transaction_id,
           "counterparty_id": 1, "payment_amount": Decimal("2502.50"), "currency_id": 1,
           "payment_type_id": 1, "paid": False, "payment_date": "2024-11-30",
           "company_ac_number": 12345678, "counterparty_ac_number": 87654321}
    row.update(changes)
    return row


def base_batch(at=T0):
    """A small consistent first batch covering all eleven source tables."""
    return {
        "address": [address(1, at), address(2, at, address_line_2="Unit 5", district="West")],
        "counterparty": [counterparty(1, 1, at), counterparty(2, 2, at), counterparty(3, 1, at)],
        "currency": [{"currency_id": 1, "currency_code": "GBP", **stamps(at)},
                     {"currency_id": 2, "currency_code": "USD", **stamps(at)},
                     {"currency_id": 3, "currency_code": "XQZ", **stamps(at)}],
        "department": [department(1, at), department(2, at, location="Leeds")],
        "design": [{"design_id": 1, **stamps(at), "design_name": "Wooden", "file_location": "/usr",
                    "file_name": "wooden-1.json"}],
        "staff": [staff(1, 1, at), staff(2, 2, at), staff(3, 1, at)],
        "sales_order": [sales_order(1, at), sales_order(2, at, units_sold=5000, currency_id=2)],
        "purchase_order": [purchase_order(1, at)],
        "payment_type": [{"payment_type_id": 1, "payment_type_name": "SALES_RECEIPT", **stamps(at)},
                         {"payment_type_id": 3, "payment_type_name": "PURCHASE_PAYMENT", **stamps(at)}],
        "transaction": [{"transaction_id": 1, "transaction_type": "SALE", "sales_order_id": 1,
                         "purchase_order_id": None, **stamps(at)},
                        {"transaction_id": 2, "transaction_type": "SALE", "sales_order_id": 2,
                         "purchase_order_id": None, **stamps(at)},
                        {"transaction_id": 3, "transaction_type": "PURCHASE", "sales_order_id": None,
                         "purchase_order_id": 1, **stamps(at)}],
        "payment": [payment(1, 1, at), payment(2, 2, at), payment(3, 3, at, payment_type_id=3)],
    }


def write_ingest_batch(s3, bucket, batch_time, tables):
    """Write one ingest batch (``{table: rows or pyarrow Table or raw bytes}``); return its manifest key.

    Raw bytes are written as they are (to plant a corrupt or wrongly shaped file).
    """
    state, etag = read_state(s3, bucket, "ingest")
    landed = {}
    for name, rows in tables.items():
        key = generate_file_key(name, batch_time)
        if isinstance(rows, bytes):
            body = rows
        else:
            table = (rows if isinstance(rows, pa.Table)
                     else pa.Table.from_pylist(rows, schema=LANDING_SCHEMAS[name]))
            body = parquet_data({name: table.to_pylist()}, schema=table.schema).getvalue()
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        landed[name] = {"key": key, "rows": len(rows) if isinstance(rows, list) else 0,
                        "low": None, "high": format_time(batch_time), "snapshot": "1:1:"}
    batch_id = f"{batch_time:%Y%m%dT%H%M%S%f}"
    manifest_key = generate_file_key("_batches", batch_time, "json")
    manifest = {"batch_id": batch_id, "batch_time": format_time(batch_time), "timezone": "UTC",
                "ignored_columns": {}, "prev_manifest_key": state.get("manifest_key"), "tables": landed}
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest).encode())
    write_state(s3, bucket, "ingest", {"manifest_key": manifest_key, "batch_id": batch_id, "timezone": "UTC",
                                       "ignored_columns": {}, "tables": {}}, etag)
    return manifest_key


def later(minutes):
    return T0 + timedelta(minutes=minutes)
