"""The strict test_decoding parser: every change of a source table is read exactly, and anything it cannot
read fails with the table, the column and the LSN; a real run stops before landing or advancing anything."""
import pytest

import ingest
from tests.support.cdc import slot_row
from tests.support.cdc import url_as
from tests.support.db import run_sql
from utils.aws.state import read_state
from utils.ingest.cdc.decode import CdcDecodeError, Truncate, parse_line
from utils.ingest.cdc.run import fold_changes
from totesys_local.aws_emulation import put_credentials_secret
from utils.ingest.cdc.slot import CdcUnavailableError, check_prerequisites

LSN = "0/16B3748"


def test_an_update_of_every_kind_of_value_is_read_exactly():
    line = ("table public.staff: UPDATE: staff_id[integer]:7 first_name[text]:'O''Neil \"Jo\"' "
            "last_name[text]:'' department_id[integer]:2 email_address[text]:null "
            "created_at[timestamp without time zone]:'2022-11-03 14:20:51.563' "
            "last_updated[timestamp(3) without time zone]:'2022-11-03 14:20:51'")
    change = parse_line(LSN, line)
    assert (change.table, change.kind, change.key, change.old_key) == ("staff", "UPDATE", 7, None)
    assert change.row == {"staff_id": "7", "first_name": "O'Neil \"Jo\"", "last_name": "",
                          "department_id": "2", "email_address": None,
                          "created_at": "2022-11-03 14:20:51.563", "last_updated": "2022-11-03 14:20:51"}


def test_booleans_numbers_enums_quoted_names_deletes_and_key_changes():
    payment = parse_line(LSN, "table public.payment: INSERT: payment_id[integer]:3 paid[boolean]:false "
                              "payment_amount[numeric]:-12.50 \"odd \"\"col\"[character varying]:'x y'")
    assert payment.row == {"payment_id": "3", "paid": "f", "payment_amount": "-12.50", 'odd "col': "x y"}
    kind = parse_line(LSN, "table public.payment_type: INSERT: payment_type_id[integer]:1 "
                           "payment_type_name[\"PaymentTypeName\"]:'SALES_RECEIPT'")
    assert kind.row["payment_type_name"] == "SALES_RECEIPT"
    gone = parse_line(LSN, "table public.sales_order: DELETE: sales_order_id[integer]:42")
    assert (gone.kind, gone.key, gone.row) == ("DELETE", 42, None)
    moved = parse_line(LSN, "table public.currency: UPDATE: old-key: currency_id[integer]:1 new-tuple: "
                            "currency_id[integer]:9 currency_code[character varying]:'GBP'")
    assert (moved.key, moved.old_key) == (9, 1)


def test_lines_that_are_not_changes_of_source_tables_are_not_changes():
    for line in ("BEGIN", "COMMIT", "message: transactional: 1 prefix: x, sz: 0 content:",
                 "table public._prisma_migrations: INSERT: id[text]:'a'",
                 "table audit.payment: INSERT: payment_id[integer]:1"):
        assert parse_line(LSN, line) is None


def test_a_truncate_names_the_source_tables_it_emptied_and_folds_to_nothing_before_it():
    assert parse_line(LSN, "table public.payment: TRUNCATE: (no-flags)") == Truncate(("payment",), LSN)
    assert parse_line(LSN, "table public.sales_order, public.\"transaction\", public.payment, audit.x: "
                           "TRUNCATE: restart_seqs cascade") == \
        Truncate(("sales_order", "transaction", "payment"), LSN)
    assert parse_line(LSN, "table public._prisma_migrations: TRUNCATE: (no-flags)") is None
    lines = [(LSN, "table public.payment: INSERT: payment_id[integer]:7"),
             (LSN, "table public.payment: DELETE: payment_id[integer]:3"),
             (LSN, "table public.payment, public.currency: TRUNCATE: (no-flags)"),
             (LSN, "table public.payment: INSERT: payment_id[integer]:3"),
             (LSN, "table public.payment: INSERT: payment_id[integer]:9"),
             (LSN, "table public.payment: DELETE: payment_id[integer]:9")]
    folded = fold_changes(lines, "public")
    payment, currency = folded["payment"], folded["currency"]
    assert payment.truncated and currency.truncated
    assert (set(payment.rows), payment.inserted) == ({3}, {3})
    assert (currency.rows, currency.inserted, currency.deleted) == ({}, set(), set())


@pytest.mark.parametrize("line, table, column", [
    ("table public.payment, public.currency: DELETE: payment_id[integer]:1", None, None),
    ("table public.design: UPDATE: design_id[integer]:1 file_location[text]:unchanged-toast-datum",
     "design", "file_location"),
    ("table public.design: UPDATE: design_id[integer]:1 design_name[text]:'unterminated", "design",
     "design_name"),
    ("table public.payment: UPDATE: payment_id[integer]:1 paid[boolean]:maybe", "payment", "paid"),
    ("table public.payment: UPDATE: payment_id[integer]:1 payment_amount[numeric]:12,5", "payment",
     "payment_amount"),
    ("table public.payment: DELETE: (no-tuple-data)", "payment", "payment_id"),
    ("table public.payment: UPDATE: payment_id[integer]:x1", "payment", "payment_id"),
    ("table public.payment: UPDATE: paid[boolean]:true", "payment", "payment_id"),
    ("table public.payment: MERGE: payment_id[integer]:1", "payment", None),
    ("garbage", None, None),
])
def test_a_change_the_parser_cannot_read_names_table_column_and_lsn(line, table, column):
    with pytest.raises(CdcDecodeError) as raised:
        parse_line(LSN, line)
    assert (raised.value.table, raised.value.column, raised.value.lsn) == (table, column, LSN)
    assert LSN in str(raised.value)


class Answers:
    """A connection that answers the prerequisites query with ``row``."""

    def __init__(self, row):
        self.row = row

    def run(self, sql, **params):
        return [self.row]


def test_the_start_up_check_names_everything_missing_in_one_line():
    with pytest.raises(CdcUnavailableError) as raised:
        check_prerequisites(Answers(("replica", False)))
    message = str(raised.value)
    assert "\n" not in message and "wal_level" in message and "REPLICATION" in message
    assert len(raised.value.missing) == 2
    check_prerequisites(Answers(("logical", True)))


def test_a_role_without_replication_is_refused_before_anything_is_read_and_with_it_runs(env, cdc_mode):
    s3, bucket, url = env
    run_sql(url, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_reader') THEN "
                 "CREATE ROLE cdc_reader LOGIN PASSWORD 'pw' NOREPLICATION; END IF; END $$")
    run_sql(url, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc_reader")
    put_credentials_secret("test/totesys", url_as(url, "cdc_reader", "pw"))
    with pytest.raises(CdcUnavailableError, match="REPLICATION"):
        ingest.lambda_handler({}, None)
    assert slot_row(url, cdc_mode) is None and read_state(s3, bucket, "ingest") == ({}, None)

    # With the attribute and nothing more than SELECT (no superuser), the snapshot and a batch run.
    run_sql(url, "ALTER ROLE cdc_reader REPLICATION")
    try:
        ingest.lambda_handler({}, None)
        run_sql(url, "UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 1")
        assert set(ingest.lambda_handler({}, None)) == {"payment"}
    finally:
        run_sql(url, "ALTER ROLE cdc_reader NOREPLICATION")


def test_an_unchanged_toast_value_fails_the_run_before_anything_lands_or_the_slot_moves(env, cdc_mode):
    s3, bucket, url = env
    run_sql(url, "UPDATE design SET file_location = (SELECT string_agg(md5(g::text), '') "
                 "FROM generate_series(1, 400) g) WHERE design_id = 1")
    ingest.lambda_handler({}, None)  # the snapshot
    before = read_state(s3, bucket, "ingest")
    position = slot_row(url, cdc_mode)
    run_sql(url, "UPDATE design SET design_name = 'renamed' WHERE design_id = 1")
    with pytest.raises(CdcDecodeError) as raised:
        ingest.lambda_handler({}, None)
    assert (raised.value.table, raised.value.column) == ("design", "file_location")
    assert raised.value.lsn and raised.value.lsn in str(raised.value)
    assert read_state(s3, bucket, "ingest") == before and slot_row(url, cdc_mode) == position


def test_changes_fold_to_each_key_s_last_version_inserted_and_deleted_keys():
    lines = [("0/1", "table public.currency: INSERT: currency_id[integer]:4 currency_code[text]:'CHF'"),
             ("0/2", "table public.currency: UPDATE: currency_id[integer]:4 currency_code[text]:'CHX'"),
             ("0/3", "table public.currency: DELETE: currency_id[integer]:2"),
             ("0/4", "table public.currency: INSERT: currency_id[integer]:5 currency_code[text]:'JPY'"),
             ("0/5", "table public.currency: DELETE: currency_id[integer]:5"),
             ("0/6", "table public.currency: UPDATE: old-key: currency_id[integer]:1 new-tuple: "
                     "currency_id[integer]:9 currency_code[text]:'GBP'"),
             ("0/7", "table public.currency: INSERT: currency_id[integer]:2 currency_code[text]:'USD'"),
             ("0/8", "COMMIT")]
    folded = fold_changes(lines, "public")["currency"]
    assert {key: row["currency_code"] for key, (row, _) in folded.rows.items()} == \
        {4: "CHX", 9: "GBP", 2: "USD"}
    assert folded.inserted == {4, 9, 2} and folded.deleted == {5, 1}
