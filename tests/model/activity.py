"""Business activity on the model's source, as the application writes it: sessions in the database's
configured time zone, ``last_updated`` stamped with the source's wall clock.

Every function takes an open writer connection inside a transaction the caller controls (so a late
commit can hold one open across a run) and ``pick``, an integer from the random history that chooses
among the candidate rows (``candidates[pick % len]``). ``avoid`` is a set of (table, id) the caller
must not touch (rows locked by an open transaction). A function returns a short description of what
it did, or None when it found nothing to do.
"""
from tests.model.source import TABLES
from utils.db.connection import connect_to_db, credentials_from_url

# A new version gets the wall clock, except when that would give it the stamp its row already has
# (two writes in one millisecond): then one millisecond more. A wall clock that went back (a
# daylight-saving fall-back, a zone change) stamps back, as the application would.
STAMP = ("CASE WHEN last_updated >= CAST(localtimestamp AS timestamp(3)) "
         "AND last_updated < CAST(localtimestamp AS timestamp(3)) + interval '1 second' "
         "THEN last_updated + interval '1 millisecond' ELSE localtimestamp END")

# Values the warehouse cannot hold, one kind per fact table, and their fixes.
BAD_VALUES = {
    "impossible_date": ("sales_order", "agreed_delivery_date", "'2024-02-30'", "'2024-12-30'"),
    "null": ("payment", "payment_date", "NULL", "'2024-12-01'"),
    "out_of_range": ("purchase_order", "item_quantity", "40000 + (random() * 50000)::int", "17"),
    "null_order_date": ("sales_order", "agreed_payment_date", "NULL", "'2024-12-31'"),
}


def writer(url):
    """A session as the application's: the database's configured zone, short lock waits."""
    conn = connect_to_db(credentials=credentials_from_url(url), timezone=None)
    # A row locked by the history's open late transaction must never hang the single-threaded driver.
    conn.run("SET lock_timeout = '300ms'")
    return conn


def ids(conn, table, avoid=(), where="TRUE"):
    """The ids of ``table`` this transaction sees (minus ``avoid``), sorted."""
    rows = conn.run(f"SELECT {table}_id FROM {table} WHERE {where} ORDER BY 1")  # nosec B608 - fixed
    return [row[0] for row in rows if (table, row[0]) not in avoid]


def choose(candidates, pick):
    return candidates[pick % len(candidates)] if candidates else None


def _one(conn, table, pick, avoid=(), where="TRUE"):
    return choose(ids(conn, table, avoid, where), pick)


def _insert(conn, table, values):
    """INSERT one row of ``values`` (column -> SQL expression text built here from fixed templates and
    integers) stamped now; return its id."""
    columns = ", ".join(list(values) + ["created_at", "last_updated"])
    expressions = ", ".join(list(values.values()) + ["localtimestamp", "localtimestamp"])
    return conn.run(f"INSERT INTO {table} ({columns}) VALUES ({expressions}) "  # nosec B608 - templates
                    f"RETURNING {table}_id")[0][0]


def _refs(conn, pick):
    """Existing rows a new order may reference, chosen by ``pick``."""
    return {name: _one(conn, name, pick + offset) for offset, name in enumerate(
        ("design", "staff", "counterparty", "currency", "address", "payment_type"))}


def insert_dimension(conn, table, pick):
    """A new row of a dimension table."""
    n = pick % 100000
    values = {
        "address": {"address_line_1": f"'{n} New Road'", "address_line_2": "NULL", "district": "NULL",
                    "city": f"'City {n}'", "postal_code": f"'PC{n}'", "country": "'UK'", "phone": f"'0{n}'"},
        "counterparty": {"counterparty_legal_name": f"'Client {n} Ltd'",
                         "legal_address_id": str(_one(conn, "address", pick)),
                         "commercial_contact": "NULL", "delivery_contact": "'Bo'"},
        "currency": {"currency_code": ("'GBP'", "'USD'", "'EUR'", "'JPY'", "'XQZ'")[pick % 5]},
        "department": {"department_name": f"'Dept {n}'", "location": "'Leeds'", "manager": "NULL"},
        "design": {"design_name": f"'Design {n}'", "file_location": "'/usr'", "file_name": f"'d{n}.json'"},
        "staff": {"first_name": f"'F{n}'", "last_name": "'Model'",
                  "department_id": str(_one(conn, "department", pick)),
                  "email_address": f"'f{n}.model@terrifictotes.com'"},
        "payment_type": {"payment_type_name": ("'SALES_RECEIPT'", "'SALES_REFUND'", "'PURCHASE_PAYMENT'",
                                               "'PURCHASE_REFUND'")[pick % 4]},
    }[table]
    return f"insert {table} {_insert(conn, table, values)}"


def insert_sale(conn, pick, purchase=False):
    """A sale (or a purchase): the order, its transaction and its payment, in one transaction."""
    refs = _refs(conn, pick)
    n = pick % 997
    dates = {"agreed_delivery_date": f"'2024-12-{1 + n % 28:02d}'",
             "agreed_payment_date": f"'2025-01-{1 + n % 28:02d}'"}
    if purchase:
        order = _insert(conn, "purchase_order", {
            "staff_id": str(refs["staff"]), "counterparty_id": str(refs["counterparty"]),
            "item_code": f"'IT{n:05d}'", "item_quantity": str(1 + n), "item_unit_price": f"{3 + n}.25",
            "currency_id": str(refs["currency"]), **dates,
            "agreed_delivery_location_id": str(refs["address"])})
        link = {"transaction_type": "'PURCHASE'", "sales_order_id": "NULL", "purchase_order_id": str(order)}
    else:
        order = _insert(conn, "sales_order", {
            "design_id": str(refs["design"]), "staff_id": str(refs["staff"]),
            "counterparty_id": str(refs["counterparty"]), "units_sold": str(1001 + n * 31),
            "unit_price": f"{2 + n % 3}.{n % 100:02d}", "currency_id": str(refs["currency"]), **dates,
            "agreed_delivery_location_id": str(refs["address"])})
        link = {"transaction_type": "'SALE'", "sales_order_id": str(order), "purchase_order_id": "NULL"}
    transaction = _insert(conn, "transaction", link)
    payment = _insert(conn, "payment", {
        "transaction_id": str(transaction), "counterparty_id": str(refs["counterparty"]),
        "payment_amount": f"{100 + n}.{n % 100:02d}", "currency_id": str(refs["currency"]),
        "payment_type_id": str(refs["payment_type"]), "paid": "false",
        "payment_date": dates["agreed_payment_date"],
        "company_ac_number": "12345678", "counterparty_ac_number": "87654321"})
    kind = "purchase_order" if purchase else "sales_order"
    return f"insert {kind} {order}, transaction {transaction}, payment {payment}"


# One ordinary change per table: (SET clause without last_updated).
CHANGES = {
    "address": "phone = '0' || (random() * 1e6)::int, city = 'Moved ' || (random() * 1e3)::int",
    "counterparty": "counterparty_legal_name = 'Renamed ' || (random() * 1e3)::int",
    "currency": "currency_code = currency_code",
    "department": "location = CASE WHEN location = 'Leeds' THEN 'Manchester' ELSE 'Leeds' END",
    "design": "design_name = 'Design v' || (random() * 1e3)::int",
    "staff": "last_name = 'Changed' || (random() * 1e3)::int",
    "payment_type": "payment_type_name = payment_type_name",
    "sales_order": ("units_sold = 1001 + (random() * 20000)::int, "
                    "unit_price = 2 + (random() * 2)::numeric(3,2)"),
    "purchase_order": "item_quantity = 1 + (random() * 998)::int",
    "transaction": "transaction_type = transaction_type",
    "payment": "paid = NOT paid, payment_amount = payment_amount + 1",
}


def update(conn, table, pick, times=1, avoid=(), set_clause=None):
    """``times`` updates of one row of ``table`` (one version each)."""
    row = _one(conn, table, pick, avoid)
    if row is None:
        return None
    for _ in range(times):
        conn.run(f"UPDATE {table} SET {set_clause or CHANGES[table]}, last_updated = {STAMP} "  # nosec B608
                 f"WHERE {table}_id = :id", id=row)
    return f"update {table} {row} x{times}"


def update_id(conn, table, row_id):
    """One ordinary update of the row ``row_id`` of ``table``."""
    conn.run(f"UPDATE {table} SET {CHANGES[table]}, last_updated = {STAMP} "  # nosec B608 - fixed names
             f"WHERE {table}_id = :id", id=row_id)


def move_address(conn, pick, avoid=()):
    """A change of an address that is some counterparty's legal address (dim_counterparty must follow)."""
    used = [row[0] for row in conn.run("SELECT DISTINCT legal_address_id FROM counterparty ORDER BY 1")
            if ("address", row[0]) not in avoid]
    address = choose(used, pick)
    if address is None:
        return None
    conn.run("UPDATE address SET city = 'Cascade ' || (random() * 1e4)::int, "
             f"last_updated = {STAMP} "  # nosec B608 - fixed text
             "WHERE address_id = :id", id=address)
    return f"move address {address} (legal address of counterparties)"


def delete(conn, table, pick, avoid=()):
    """Hard-delete one row of ``table`` (with its payment and transaction for an order), when no other
    row references it; None otherwise (the savepoint is rolled back)."""
    row = _one(conn, table, pick, avoid)
    if row is None:
        return None
    conn.run("SAVEPOINT model_delete")
    try:
        conn.run(f"DELETE FROM {table} WHERE {table}_id = :id", id=row)  # nosec B608 - fixed names
    except Exception as err:  # noqa: BLE001 - a foreign key or the late transaction's lock: nothing done
        conn.run("ROLLBACK TO SAVEPOINT model_delete")
        return None if "violates foreign key" in str(err) or "lock" in str(err) else _raise(err)
    conn.run("RELEASE SAVEPOINT model_delete")
    return f"delete {table} {row}"


def _raise(err):
    raise err


def deleted_ids(conn):
    """(table, id) of rows deleted and not re-inserted, from the audit (oldest first)."""
    rows = conn.run("SELECT DISTINCT ON (tbl, id) tbl, id, op FROM model_audit.version "
                    "ORDER BY tbl, id, seq DESC")
    return sorted((table, row_id) for table, row_id, op in rows if op == "D")


def reinsert(conn, pick):
    """Insert again, under its old id, a row that was deleted: its last version's values, stamped now."""
    gone = deleted_ids(conn)
    choice = choose(gone, pick)
    if choice is None:
        return None
    table, row_id = choice
    conn.run("SAVEPOINT model_reinsert")
    try:
        conn.run(f"INSERT INTO {table} SELECT * FROM jsonb_populate_record(NULL::{table}, "  # nosec B608
                 "(SELECT row_json FROM model_audit.version WHERE tbl = :t AND id = :id ORDER BY seq DESC "
                 "LIMIT 1) || jsonb_build_object('last_updated', localtimestamp))", t=table, id=row_id)
    except Exception as err:  # noqa: BLE001 - its references are gone too (or unique keys taken)
        conn.run("ROLLBACK TO SAVEPOINT model_reinsert")
        if "foreign key" in str(err) or "unique" in str(err) or "lock" in str(err):
            return None
        raise
    conn.run("RELEASE SAVEPOINT model_reinsert")
    return f"re-insert {table} {row_id}"


def bad_value(conn, kind, pick, avoid=()):
    """Write a value the warehouse cannot hold into one fact row (a new version)."""
    table, column, bad, _ = BAD_VALUES[kind]
    return update(conn, table, pick, avoid=avoid, set_clause=f"{column} = {bad}") and \
        f"bad {kind} in {table}"


def fix_bad_values(conn, pick, avoid=()):
    """Correct the rows whose current value is bad (a new version each), chosen by ``pick``: one kind."""
    kind = sorted(BAD_VALUES)[pick % len(BAD_VALUES)]
    table, column, _, good = BAD_VALUES[kind]
    bad_test = {"impossible_date": f"{column} = '2024-02-30'", "null": f"{column} IS NULL",
                "null_order_date": f"{column} IS NULL", "out_of_range": f"{column} > 32767"}[kind]
    rows = ids(conn, table, avoid, where=bad_test)
    for row in rows:
        conn.run(f"UPDATE {table} SET {column} = {good}, last_updated = {STAMP} "  # nosec B608 - fixed
                 f"WHERE {table}_id = :id", id=row)
    return f"fix {kind} in {table} {rows}" if rows else None


def backdated_insert(conn, pick, days):
    """A new order whose last_updated is ``days`` in the past (restored from a backup)."""
    done = insert_sale(conn, pick)
    conn.run("UPDATE sales_order SET last_updated = localtimestamp - make_interval(days => :d) "
             "WHERE sales_order_id = (SELECT max(sales_order_id) FROM sales_order)", d=days)
    return done + f" backdated {days} days"


def future_update(conn, pick, minutes, avoid=()):
    """A version stamped ``minutes`` ahead of the source's wall clock."""
    return update(conn, "payment", pick, avoid=avoid,
                  set_clause="paid = NOT paid") and conn.run(
        "UPDATE payment SET last_updated = localtimestamp + make_interval(mins => :m) "
        "WHERE payment_id = (SELECT id FROM model_audit.version WHERE tbl = 'payment' "
        "ORDER BY seq DESC LIMIT 1)",
        m=minutes) is not None and f"future-stamped payment +{minutes} min"


assert set(CHANGES) == set(TABLES)
