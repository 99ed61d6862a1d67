"""The model's source and warehouse templates, and the audit that makes the model independent of the pipeline.

The source is a tiny seeded totesys (``generator.seed`` at SOURCE_SCALE: the real dimensions, a few dozen
orders) with two things added that the pipeline never reads:

* ``model_audit.version``: an AFTER trigger on every source table records each row version as it is
  written (table, id, operation, last_updated, the whole row as JSON) together with the writing
  transaction's id (``pg_current_xact_id()``). The audit rows commit (or roll back) with the change, so
  ``pg_visible_in_snapshot(xid, S)`` says exactly which versions a snapshot ``S`` saw. The seeded rows are
  recorded once, when the template is made.
* ``payment.payment_date`` and ``sales_order.agreed_payment_date`` lose their NOT NULL, so that a NULL
  (a bad value the warehouse cannot hold) can be written, as a source without its constraints would.

The warehouse template holds the warehouse schema with ``fact_purchase_order.item_quantity`` as
``smallint`` (an existing warehouse narrower than the source, as
tests/integration/transform/test_quarantine.py uses): a quantity above 32767 is an out-of-range number the
load must quarantine.
"""
import uuid

from totesys_local.cluster import create_database, with_database
from tests.support.db import run_sql

SOURCE_SCALE = 0.001
SOURCE_SEED = 21

# Every source table and its primary key column (the spec's rule: <table>_id).
TABLES = ("address", "counterparty", "currency", "department", "design", "staff", "payment_type",
          "sales_order", "purchase_order", "transaction", "payment")
FACT_TABLES = ("sales_order", "purchase_order", "payment")
NULLABLE_FOR_THE_MODEL = {"payment": "payment_date", "sales_order": "agreed_payment_date"}
NARROW_WAREHOUSE = ("item_quantity integer NOT NULL", "item_quantity smallint NOT NULL")

AUDIT_SQL = """
CREATE SCHEMA model_audit;
CREATE TABLE model_audit.version (
    seq bigserial PRIMARY KEY,
    tbl text NOT NULL,
    id integer NOT NULL,
    op char(1) NOT NULL,
    last_updated timestamp(3),
    row_json jsonb NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE FUNCTION model_audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    body jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        body := to_jsonb(OLD);
    ELSE
        body := to_jsonb(NEW);
    END IF;
    INSERT INTO model_audit.version (tbl, id, op, last_updated, row_json)
    VALUES (TG_TABLE_NAME, (body ->> (TG_TABLE_NAME || '_id'))::int, left(TG_OP, 1),
            (body ->> 'last_updated')::timestamp(3), body);
    RETURN NULL;
END $$;
"""


def _trigger_sql(table):
    return (f"CREATE TRIGGER model_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "  # nosec B608
            "FOR EACH ROW EXECUTE FUNCTION model_audit.record()")


def make_source_template(admin_url):
    """Create the audited tiny totesys template database; return its name (copy it, never change it)."""
    from totesys_local.generator import seed
    name = f"tpl_model_src_{uuid.uuid4().hex[:8]}"
    create_database(admin_url, name)
    url = with_database(admin_url, name)
    seed(url, scale=SOURCE_SCALE, seed=SOURCE_SEED)
    for table, column in NULLABLE_FOR_THE_MODEL.items():
        run_sql(url, f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL")  # nosec B608 - fixed
    run_sql(url, AUDIT_SQL)
    for table in TABLES:
        run_sql(url, _trigger_sql(table))
        run_sql(url, "INSERT INTO model_audit.version (tbl, id, op, last_updated, row_json) "  # nosec B608
                f"SELECT '{table}', {table}_id, 'I', last_updated, to_jsonb(t) FROM {table} t")
    # Sequences start above any id a history may re-insert by hand.
    return name


def make_warehouse_template(admin_url):
    """Create the (narrowed) warehouse template database; return its name."""
    from utils.load.schema import schema_statements
    name = f"tpl_model_wh_{uuid.uuid4().hex[:8]}"
    create_database(admin_url, name)
    url = with_database(admin_url, name)
    wide, narrow = NARROW_WAREHOUSE
    statements = [statement.replace(wide, narrow) for statement in schema_statements()]
    assert any(narrow in statement for statement in statements), "the warehouse DDL changed: update NARROW"
    for statement in statements:
        run_sql(url, statement)
    return name
