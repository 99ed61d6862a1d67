"""The totesys generator against a real PostgreSQL: the scale-1 shape, scaling, determinism, errors,
and the activity simulator's guarantees and timing rule."""
import datetime as dt
import hashlib
import io
import re
import uuid
from decimal import Decimal

import pytest

from totesys_local.cluster import create_database, drop_database, free_port, with_database
from totesys_local.generator import GeneratorError, seed, simulate
from utils.db.connection import connect_to_db, credentials_from_url
from utils.catalog.source import SOURCE_TABLES

ORDER_TABLES = ("sales_order", "purchase_order", "transaction", "payment")
DIMENSIONS = {"address": 30, "counterparty": 20, "currency": 3, "department": 8, "staff": 20,
              "payment_type": 4}
# The foreign keys of SPEC section 2's schema.
FOREIGN_KEYS = (
    ("counterparty", "legal_address_id", "address"), ("staff", "department_id", "department"),
    ("sales_order", "design_id", "design"), ("sales_order", "staff_id", "staff"),
    ("sales_order", "counterparty_id", "counterparty"), ("sales_order", "currency_id", "currency"),
    ("sales_order", "agreed_delivery_location_id", "address"),
    ("purchase_order", "staff_id", "staff"), ("purchase_order", "counterparty_id", "counterparty"),
    ("purchase_order", "currency_id", "currency"),
    ("purchase_order", "agreed_delivery_location_id", "address"),
    ("transaction", "sales_order_id", "sales_order"), ("transaction", "purchase_order_id", "purchase_order"),
    ("payment", "transaction_id", "transaction"), ("payment", "counterparty_id", "counterparty"),
    ("payment", "currency_id", "currency"), ("payment", "payment_type_id", "payment_type"),
)


_connections = {}


def _connection(url):
    if url not in _connections:
        _connections[url] = connect_to_db(credentials=credentials_from_url(url))
    return _connections[url]


@pytest.fixture(autouse=True)
def _close_connections():
    """One connection per database a test uses (authentication is not free), closed after it."""
    yield
    while _connections:
        _connections.popitem()[1].close()


def rows(url, sql, **params):
    return _connection(url).run(sql, **params)


def value(url, sql, **params):
    return rows(url, sql, **params)[0][0]


def table_counts(url):
    sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{table}")' for table in SOURCE_TABLES)
    return dict(zip(SOURCE_TABLES, rows(url, sql)[0]))


def user_objects(url):
    """Every table and user-defined type in the public schema: what 'unchanged' is checked against."""
    return rows(url, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = 'public' UNION ALL "
                     "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                     "WHERE n.nspname = 'public' ORDER BY 1")


def copy_digest(url, table):
    out = io.BytesIO()
    rows(url, f'COPY (SELECT * FROM "{table}" ORDER BY 1) TO STDOUT WITH (FORMAT csv)', stream=out)
    return hashlib.sha256(out.getvalue()).hexdigest()


def assert_foreign_keys_valid(url):
    for table, column, parent in FOREIGN_KEYS:
        orphans = value(url, f'SELECT count(*) FROM "{table}" c LEFT JOIN "{parent}" p '
                             f'ON p."{parent}_id" = c."{column}" '
                             f'WHERE c."{column}" IS NOT NULL AND p."{parent}_id" IS NULL')
        assert orphans == 0, f"{table}.{column} has {orphans} orphans"
    constraints = value(url, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated")
    assert constraints == len(FOREIGN_KEYS)


@pytest.fixture(scope="module")
def scale1(pg_admin_url, totesys_template):
    """One read-only copy of the scale-1 (seed 42) database for the shape tests of this module."""
    name = f"t_gen_{uuid.uuid4().hex[:8]}"
    create_database(pg_admin_url, name, totesys_template)
    yield with_database(pg_admin_url, name)
    drop_database(pg_admin_url, name)


# -- scale 1: the shape of the real data --------------------------------------------------------------

def test_scale_one_row_counts_match_the_real_database(scale1):
    counts = table_counts(scale1)
    for table, expected in DIMENSIONS.items():
        assert counts[table] == expected, table
    assert counts["design"] == 473
    assert counts["sales_order"] == pytest.approx(11_187, rel=0.03)
    assert counts["purchase_order"] == pytest.approx(4_649, rel=0.03)
    assert counts["transaction"] == counts["sales_order"] + counts["purchase_order"]
    assert counts["payment"] == counts["transaction"]


def test_small_dimensions_hold_the_real_domains(scale1):
    assert rows(scale1, "SELECT currency_id, currency_code FROM currency ORDER BY 1") == [
        [1, "GBP"], [2, "USD"], [3, "EUR"]]
    departments = dict(rows(scale1, "SELECT department_name, location FROM department"))
    assert set(departments) == {"Sales", "Purchasing", "Production", "Dispatch", "Finance", "Facilities",
                                "Communications", "HR"}
    assert set(departments.values()) == {"Manchester", "Leeds", "Leds"}
    assert list(departments.values()).count("Leds") == 1
    assert rows(scale1, "SELECT payment_type_id, CAST(payment_type_name AS text) FROM payment_type "
                        "ORDER BY 1") == [[1, "SALES_RECEIPT"], [2, "SALES_REFUND"],
                                          [3, "PURCHASE_PAYMENT"], [4, "PURCHASE_REFUND"]]
    assert rows(scale1, "SELECT CAST(enum_range(NULL::\"TransactionType\") AS text)") == [["{SALE,PURCHASE}"]]
    assert value(scale1, "SELECT count(DISTINCT design_name) FROM design") == 12
    assert value(scale1, "SELECT count(*) FROM _prisma_migrations") == 1


def test_payments_use_only_receipt_and_purchase_payment_types(scale1):
    used = rows(scale1, "SELECT CAST(t.transaction_type AS text), p.payment_type_id, count(*) "
                        "FROM payment p JOIN transaction t USING (transaction_id) GROUP BY 1, 2 ORDER BY 1")
    assert [(kind, type_id) for kind, type_id, _ in used] == [("PURCHASE", 3), ("SALE", 1)]


def test_staff_emails_are_first_dot_last_at_terrifictotes(scale1):
    staff = rows(scale1, "SELECT first_name, last_name, email_address FROM staff")
    for first, last, email in staff:
        assert re.fullmatch(r"[a-z]+\.[a-z]+@terrifictotes\.com", email)
        assert email == f"{first.lower()}.{last.lower()}@terrifictotes.com"


def test_addresses_have_the_real_null_rates_and_29_countries(scale1):
    assert value(scale1, "SELECT count(*) FROM address WHERE address_line_2 IS NULL") == 20
    assert value(scale1, "SELECT count(*) FROM address WHERE district IS NULL") == 14
    assert value(scale1, "SELECT count(DISTINCT country) FROM address") == 29
    assert value(scale1, "SELECT count(DISTINCT legal_address_id) FROM counterparty") == 20


def test_order_values_lie_in_the_real_ranges(scale1):
    low_units, high_units, low_price, high_price = rows(
        scale1, "SELECT min(units_sold), max(units_sold), min(unit_price), max(unit_price) "
                "FROM sales_order")[0]
    assert 1_001 <= low_units and high_units <= 99_973
    assert 2 <= low_price and high_price <= 4 and low_price < 2.1 and high_price > 3.9
    codes = rows(scale1, "SELECT DISTINCT length(item_code), item_code ~ '^[A-Z0-9]+$' FROM purchase_order")
    assert codes == [[7, True]]
    low_qty, high_qty, low_item, high_item = rows(
        scale1, "SELECT min(item_quantity), max(item_quantity), min(item_unit_price), max(item_unit_price) "
                "FROM purchase_order")[0]
    assert (low_qty, high_qty) == (1, 999)
    assert 3 <= low_item < 5 and 990 < high_item <= 1000
    low_amount, high_amount = rows(scale1, "SELECT min(payment_amount), max(payment_amount) FROM payment")[0]
    assert Decimal("65.78") <= low_amount and high_amount <= Decimal("981451.44")


def test_payment_amount_counterparty_and_currency_follow_the_order(scale1):
    mismatched = value(scale1, """
        SELECT count(*) FROM payment p JOIN transaction t USING (transaction_id)
        LEFT JOIN sales_order s USING (sales_order_id)
        LEFT JOIN purchase_order o USING (purchase_order_id)
        WHERE p.counterparty_id <> coalesce(s.counterparty_id, o.counterparty_id)
           OR p.currency_id <> coalesce(s.currency_id, o.currency_id)
           OR p.payment_date <> coalesce(s.agreed_payment_date, o.agreed_payment_date)
           OR p.payment_amount <> greatest(65.78, least(981451.44,
                  coalesce(s.units_sold * s.unit_price, o.item_quantity * o.item_unit_price)))""")
    assert mismatched == 0


def test_agreed_dates_are_text_up_to_a_week_after_creation(scale1):
    for table in ("sales_order", "purchase_order"):
        bad_format = value(scale1, f"SELECT count(*) FROM {table} "
                                   "WHERE agreed_delivery_date !~ '^\\d{4}-\\d{2}-\\d{2}$' "
                                   "OR agreed_payment_date !~ '^\\d{4}-\\d{2}-\\d{2}$'")
        assert bad_format == 0
        spread = rows(scale1, f"""
            SELECT min(CAST(agreed_delivery_date AS date) - CAST(created_at AS date)),
                   max(CAST(agreed_delivery_date AS date) - CAST(created_at AS date)),
                   min(CAST(agreed_payment_date AS date) - CAST(created_at AS date)),
                   max(CAST(agreed_payment_date AS date) - CAST(created_at AS date)) FROM {table}""")[0]
        assert spread == [0, 7, 0, 7]
    assert value(scale1, "SELECT pg_typeof(payment_date)::text FROM payment LIMIT 1") == "text"


def test_orders_fall_in_working_hours_over_two_years(scale1):
    first, last, hours, weekdays, days = rows(scale1, """
        SELECT min(created_at), max(created_at), array_agg(DISTINCT extract(hour FROM created_at)::int),
               array_agg(DISTINCT extract(isodow FROM created_at)::int),
               count(DISTINCT CAST(created_at AS date)) FROM sales_order""")[0]
    assert first.date() == dt.date(2022, 11, 3)
    assert (last.year, last.month) == (2024, 11)
    assert sorted(hours) == list(range(8, 19))
    assert sorted(weekdays) == [1, 2, 3, 4, 5]
    per_day = value(scale1, "SELECT count(*) FROM sales_order") / days
    assert 19 <= per_day <= 23


def test_timestamps_have_milliseconds_and_about_three_percent_none(scale1):
    for table in ("sales_order", "purchase_order", "design"):
        whole, total = rows(scale1, f"SELECT count(*) FILTER (WHERE extract(milliseconds FROM created_at) "
                                    f"= floor(extract(milliseconds FROM created_at) / 1000) * 1000), "
                                    f"count(*) FROM {table} WHERE created_at > '2022-11-03 14:21:00'")[0]
        assert 0.015 <= whole / total <= 0.05, table
    distinct_ms = value(scale1, "SELECT count(DISTINCT CAST(extract(milliseconds FROM created_at) AS int) "
                                "% 1000) FROM sales_order")
    assert distinct_ms > 900


def test_about_sixty_percent_of_payments_are_paid_later(scale1):
    total, updated, paid_and_updated, min_lag, max_lag, paid_not_updated = rows(scale1, """
        SELECT count(*), count(*) FILTER (WHERE last_updated > created_at),
               count(*) FILTER (WHERE last_updated > created_at AND paid),
               min(last_updated - created_at) FILTER (WHERE last_updated > created_at),
               max(last_updated - created_at),
               count(*) FILTER (WHERE paid AND last_updated = created_at) FROM payment""")[0]
    assert 0.55 <= updated / total <= 0.65
    assert paid_and_updated == updated and paid_not_updated == 0
    assert dt.timedelta(hours=13) <= min_lag < dt.timedelta(hours=14)
    assert dt.timedelta(days=5, hours=23) < max_lag <= dt.timedelta(days=6)


def test_one_transaction_per_order_and_one_payment_per_transaction(scale1):
    assert value(scale1, """
        SELECT count(*) FROM transaction WHERE
            (transaction_type = 'SALE') <> (sales_order_id IS NOT NULL AND purchase_order_id IS NULL)
         OR (transaction_type = 'PURCHASE') <> (purchase_order_id IS NOT NULL AND sales_order_id IS NULL)
        """) == 0
    assert value(scale1, "SELECT count(*) FROM sales_order s LEFT JOIN transaction t USING (sales_order_id) "
                         "WHERE t.transaction_id IS NULL") == 0
    assert value(scale1, "SELECT count(*) FROM purchase_order o LEFT JOIN transaction t "
                         "USING (purchase_order_id) WHERE t.transaction_id IS NULL") == 0
    assert value(scale1, "SELECT count(*) FROM transaction t LEFT JOIN payment p USING (transaction_id) "
                         "WHERE p.payment_id IS NULL OR p.created_at <> t.created_at") == 0
    # Ids follow time: a later transaction never has an earlier timestamp.
    assert value(scale1, "SELECT count(*) FROM (SELECT created_at < lag(created_at) OVER (ORDER BY "
                         "transaction_id) AS back FROM transaction) x WHERE back") == 0
    assert value(scale1, "SELECT count(*) FROM sales_order s JOIN design d USING (design_id) "
                         "WHERE d.created_at > s.created_at") == 0


def test_every_foreign_key_is_valid_and_sequences_continue(scale1):
    assert_foreign_keys_valid(scale1)
    for table in SOURCE_TABLES:
        last, highest = rows(scale1, f"SELECT (SELECT last_value FROM pg_sequences WHERE sequencename = "
                                     f"'{table}_{table}_id_seq'), max({table}_id) FROM \"{table}\"")[0]
        assert last == highest, table


# -- scaling and determinism --------------------------------------------------------------------------

def test_scale_multiplies_the_order_tables_and_keeps_the_dimensions(new_database):
    small, double = new_database(), new_database()
    small_counts = seed(small, scale=0.2, seed=5)
    double_counts = seed(double, scale=0.4, seed=5)
    assert small_counts == table_counts(small) and double_counts == table_counts(double)
    for table in ORDER_TABLES + ("design",):
        assert abs(double_counts[table] - 2 * small_counts[table]) <= 2, table
    assert small_counts["sales_order"] == round(11_187 * 0.2)
    for table, expected in DIMENSIONS.items():
        assert small_counts[table] == double_counts[table] == expected
    assert_foreign_keys_valid(double)


@pytest.mark.slow
def test_scale_ten_multiplies_the_order_tables(new_database):
    url = new_database()
    counts = seed(url, scale=10, seed=42)
    assert counts == table_counts(url)
    assert counts["sales_order"] == 111_870 and counts["purchase_order"] == 46_490
    assert counts["transaction"] == counts["payment"] == 158_360
    assert counts["design"] == 4_730
    for table, expected in DIMENSIONS.items():
        assert counts[table] == expected
    assert_foreign_keys_valid(url)
    assert 0.55 <= value(url, "SELECT avg(CAST(paid AS int)) FROM payment") <= 0.65


def test_same_seed_same_data_other_seed_other_data(new_database):
    first, again, other = new_database(), new_database(), new_database()
    seed(first, scale=0.05, seed=7)
    seed(again, scale=0.05, seed=7)
    seed(other, scale=0.05, seed=8)
    for table in ("address", "design", "sales_order", "purchase_order", "transaction", "payment"):
        assert copy_digest(first, table) == copy_digest(again, table), table
    for table in ("address", "sales_order", "payment"):
        assert copy_digest(first, table) != copy_digest(other, table), table


# -- seed errors: one line, nothing changed -----------------------------------------------------------

@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf"), "many"])
def test_seed_rejects_a_scale_that_is_not_positive(new_database, scale):
    url = new_database()
    with pytest.raises(GeneratorError, match=r"^scale must be a number greater than 0, got "):
        seed(url, scale=scale)
    assert user_objects(url) == []


def test_seed_reports_an_unreachable_server():
    port = free_port()
    with pytest.raises(GeneratorError, match=rf"^cannot reach database at 127\.0\.0\.1:{port}/totesys: "):
        seed(f"postgresql://someone:secret@127.0.0.1:{port}/totesys")


def test_seed_reports_refused_credentials_without_the_password(new_database):
    url = new_database()
    wrong = re.sub(r"//([^:]+):[^@]*@", r"//\1:not-the-password@", url)
    with pytest.raises(GeneratorError, match=r"refused the connection") as raised:
        seed(wrong)
    assert "not-the-password" not in str(raised.value)
    assert user_objects(url) == []


def test_seed_rejects_a_url_that_is_not_postgresql():
    with pytest.raises(GeneratorError, match=r"database URL must look like postgresql://"):
        seed("mysql://user:pass@localhost/db")


def test_seed_refuses_a_database_that_holds_a_totesys_table(new_database):
    url = new_database()
    rows(url, "CREATE TABLE staff (note text)")
    before = user_objects(url)
    with pytest.raises(GeneratorError, match=r"^database already holds totesys tables or types \(staff\): "
                                             r"seed needs a database without them$"):
        seed(url)
    assert user_objects(url) == before
    assert rows(url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'staff'") == [
        ["note"]]


def test_seed_refuses_a_seeded_database_and_leaves_it_alone(totesys_url):
    before = table_counts(totesys_url)
    digest = copy_digest(totesys_url, "payment")
    with pytest.raises(GeneratorError, match=r"already holds totesys tables or types \(_prisma_migrations, "
                                             r"address, counterparty, currency and 10 more\)"):
        seed(totesys_url, scale=0.1)
    assert table_counts(totesys_url) == before
    assert copy_digest(totesys_url, "payment") == digest


def test_seed_failing_halfway_leaves_nothing_behind(new_database):
    url = new_database()
    # A type named like the last table passes the up-front check but makes CREATE TABLE payment fail
    # after the enums and ten tables were created in the same transaction.
    rows(url, "CREATE TYPE payment AS ENUM ('cash')")
    before = user_objects(url)
    with pytest.raises(GeneratorError, match=r"^seeding failed, nothing written: .*payment"):
        seed(url, scale=0.05)
    assert user_objects(url) == before


# -- simulate -----------------------------------------------------------------------------------------

def _state(url):
    return {
        "max": {table: value(url, f'SELECT coalesce(max({table}_id), 0) FROM "{table}"')
                for table in SOURCE_TABLES},
        "payment": {r[0]: r[1:] for r in rows(url, "SELECT payment_id, paid, last_updated FROM payment")},
        "sales_order": {r[0]: r[1:] for r in rows(
            url, "SELECT sales_order_id, last_updated, units_sold, agreed_delivery_date, agreed_payment_date "
                 "FROM sales_order")},
        "address": {r[0]: r[1:] for r in rows(
            url, "SELECT address_id, last_updated, phone, address_line_1 FROM address")},
        "staff": {r[0]: r[1:] for r in rows(
            url, "SELECT staff_id, last_updated, department_id, last_name, email_address FROM staff")},
    }


def _written_timestamps(url, before):
    """Every created_at/last_updated that differs from the state before simulate."""
    stamps = []
    for table in SOURCE_TABLES:
        for created, updated in rows(url, f'SELECT created_at, last_updated FROM "{table}" '
                                          f'WHERE {table}_id > :old', old=before["max"][table]):
            stamps += [created, updated]
    for table in ("payment", "sales_order", "address", "staff"):
        column = "last_updated"
        for row_id, updated in rows(url, f'SELECT {table}_id, {column} FROM "{table}" '
                                         f'WHERE {table}_id <= :old', old=before["max"][table]):
            old = before[table][row_id][1 if table == "payment" else 0]
            if updated != old:
                assert updated > old, f"{table} {row_id} went back in time"
                stamps.append(updated)
    return stamps


def test_simulate_makes_every_kind_of_change_inside_the_window(totesys_url):
    before = _state(totesys_url)
    start = value(totesys_url, "SELECT LOCALTIMESTAMP")
    summary = simulate(totesys_url, minutes=60, seed=3)
    finish = value(totesys_url, "SELECT LOCALTIMESTAMP")

    new = {table: value(totesys_url, f'SELECT count(*) FROM "{table}" WHERE {table}_id > :old',
                        old=before["max"][table]) for table in SOURCE_TABLES}
    assert summary["new sales orders"] == new["sales_order"] >= 1
    assert summary["new purchase orders"] == new["purchase_order"] >= 1
    assert summary["new transactions"] == new["transaction"] == new["sales_order"] + new["purchase_order"]
    assert summary["new payments"] == new["payment"] == new["transaction"]
    assert summary["new designs"] == new["design"]
    for table in ("address", "counterparty", "currency", "department", "staff", "payment_type"):
        assert new[table] == 0
    # New orders come with their transaction and an unpaid payment, all stamped with the order's time.
    assert value(totesys_url, """
        SELECT count(*) FROM payment p JOIN transaction t USING (transaction_id)
        LEFT JOIN sales_order s USING (sales_order_id) LEFT JOIN purchase_order o USING (purchase_order_id)
        WHERE p.payment_id > :old AND (p.paid OR p.created_at <> t.created_at
              OR t.created_at <> coalesce(s.created_at, o.created_at))""",
                 old=before["max"]["payment"]) == 0

    paid_now = {r[0] for r in rows(totesys_url, "SELECT payment_id FROM payment WHERE paid")}
    newly_paid = [i for i, (paid, _) in before["payment"].items() if not paid and i in paid_now]
    assert summary["payments marked paid"] == len(newly_paid) >= 1

    after = _state(totesys_url)
    updated_orders = [i for i, old in before["sales_order"].items() if after["sales_order"][i] != old]
    assert 1 <= len(updated_orders) <= summary["sales orders updated"]
    assert all(after["sales_order"][i][1:] != before["sales_order"][i][1:] for i in updated_orders)
    changed_addresses = [i for i, old in before["address"].items() if after["address"][i] != old]
    assert 1 <= len(changed_addresses) <= summary["addresses changed"]
    assert all(after["address"][i][1:] != before["address"][i][1:] for i in changed_addresses)
    changed_staff = [i for i, old in before["staff"].items() if after["staff"][i] != old]
    assert 1 <= len(changed_staff) <= summary["staff changed"]
    assert all(after["staff"][i][1:] != before["staff"][i][1:] for i in changed_staff)
    for first, last, email in rows(totesys_url, "SELECT first_name, last_name, email_address FROM staff"):
        assert email == f"{first.lower()}.{last.lower()}@terrifictotes.com"

    stamps = _written_timestamps(totesys_url, before)
    assert stamps
    window = dt.timedelta(seconds=60)
    assert all(start - window <= stamp <= finish for stamp in stamps)
    assert max(stamps) - min(stamps) <= window
    new_order_times = [r[0] for r in rows(totesys_url, "SELECT created_at FROM sales_order "
                                                       "WHERE sales_order_id > :old ORDER BY 1",
                                          old=before["max"]["sales_order"])]
    assert new_order_times == sorted(set(new_order_times))
    assert_foreign_keys_valid(totesys_url)


@pytest.mark.parametrize("now", [dt.datetime(2026, 1, 5, 12, 0, 0, 123456),
                                 dt.datetime(2026, 1, 5, 14, 0, 0, 123456,
                                             tzinfo=dt.timezone(dt.timedelta(hours=2)))])
def test_simulate_writes_exactly_inside_the_window_ending_at_the_given_now(totesys_url, now):
    end = dt.datetime(2026, 1, 5, 12, 0, 0, 123456)
    before = _state(totesys_url)
    simulate(totesys_url, minutes=90, seed=11, now=now)
    stamps = _written_timestamps(totesys_url, before)
    assert len(stamps) > 10
    assert all(end - dt.timedelta(seconds=90) <= stamp <= end for stamp in stamps)
    assert all(stamp.microsecond % 1000 == 0 for stamp in stamps)


def test_simulate_in_a_one_millisecond_window_still_stays_inside_it(totesys_url):
    end = dt.datetime(2026, 1, 5, 12, 0, 0, 500000)
    before = _state(totesys_url)
    summary = simulate(totesys_url, minutes=1 / 60_000, seed=6, now=end)
    assert summary["new sales orders"] >= 1 and summary["payments marked paid"] >= 1
    stamps = _written_timestamps(totesys_url, before)
    assert set(stamps) <= {end - dt.timedelta(milliseconds=1), end}


def test_simulate_changes_only_its_own_rows_when_every_row_is_newer_than_the_window(totesys_url):
    # A window ending before the seeded data: no existing row may be updated (it would go back in
    # time), so the guaranteed payment and order updates fall on the rows this call creates.
    before = _state(totesys_url)
    end = dt.datetime(2022, 10, 1, 9, 0)
    summary = simulate(totesys_url, minutes=45, seed=8, now=end)
    assert summary["addresses changed"] == summary["staff changed"] == 0
    assert summary["payments marked paid"] >= 1 and summary["sales orders updated"] >= 1
    after = _state(totesys_url)
    for table in ("payment", "sales_order", "address", "staff"):
        assert {key: after[table][key] for key in before[table]} == before[table], table
    window = (end - dt.timedelta(seconds=45), end)
    new_orders = rows(totesys_url, "SELECT created_at, last_updated FROM sales_order "
                                   "WHERE sales_order_id > :old", old=before["max"]["sales_order"])
    assert any(updated > created for created, updated in new_orders)
    paid_new = rows(totesys_url, "SELECT created_at, last_updated FROM payment "
                                 "WHERE paid AND payment_id > :old", old=before["max"]["payment"])
    assert len(paid_new) == summary["payments marked paid"]
    assert all(window[0] <= created < updated <= window[1] for created, updated in paid_new)


@pytest.mark.parametrize("minutes", [0, -3, float("nan"), "soon"])
def test_simulate_rejects_minutes_that_are_not_positive(totesys_url, minutes):
    before = table_counts(totesys_url)
    with pytest.raises(GeneratorError, match=r"^minutes must be a number greater than 0, got "):
        simulate(totesys_url, minutes=minutes)
    assert table_counts(totesys_url) == before


def test_simulate_needs_a_seeded_database(new_database):
    url = new_database()
    with pytest.raises(GeneratorError, match=r"^database has no totesys tables \(missing address, .*\): "
                                             r"run totesys seed first$"):
        simulate(url, minutes=5)
    assert user_objects(url) == []


def test_simulate_reports_an_unreachable_server():
    port = free_port()
    with pytest.raises(GeneratorError, match=rf"^cannot reach database at 127\.0\.0\.1:{port}/"):
        simulate(f"postgresql://someone:secret@127.0.0.1:{port}/totesys", minutes=5)


def test_simulate_failing_halfway_changes_nothing(totesys_url):
    # A real trigger refuses staff changes: the orders written earlier in the call must roll back too.
    rows(totesys_url, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN RAISE EXCEPTION 'staff changes are frozen'; END $$")
    rows(totesys_url, "CREATE TRIGGER frozen BEFORE UPDATE ON staff FOR EACH ROW EXECUTE FUNCTION refuse()")
    before = table_counts(totesys_url)
    digests = {table: copy_digest(totesys_url, table) for table in ("payment", "sales_order", "address")}
    with pytest.raises(GeneratorError,
                       match=r"^simulation failed, nothing written: staff changes are frozen$"):
        simulate(totesys_url, minutes=120, seed=9)
    assert table_counts(totesys_url) == before
    assert {table: copy_digest(totesys_url, table) for table in digests} == digests


def test_a_staff_change_always_changes_what_the_warehouse_shows(new_database, monkeypatch):
    """Every simulated staff change alters the member's department, or surname and e-mail: a surname
    is never 'changed' to the one the member already has."""
    from totesys_local import generator_data
    from utils.db.connection import close_db_connection
    url = new_database()
    seed(url, scale=0.05, seed=3)
    conn = connect_to_db(credentials=credentials_from_url(url))
    conn.run("UPDATE staff SET last_name = 'Torp', "
             "email_address = lower(first_name) || '.torp@terrifictotes.com'")
    close_db_connection(conn)
    monkeypatch.setattr(generator_data, "OTHER_LAST_NAMES", ("Torp", "Mraz"))
    query = ("SELECT s.staff_id, s.last_name, s.email_address, d.department_name FROM staff s "
             "JOIN department d USING (department_id) ORDER BY 1")
    for run in range(8):
        conn = connect_to_db(credentials=credentials_from_url(url))
        before = {row[0]: tuple(row[1:]) for row in conn.run(query)}
        close_db_connection(conn)
        summary = simulate(url, minutes=30, seed=100 + run)
        conn = connect_to_db(credentials=credentials_from_url(url))
        after = {row[0]: tuple(row[1:]) for row in conn.run(query)}
        close_db_connection(conn)
        changed = [staff_id for staff_id in before if before[staff_id] != after[staff_id]]
        assert len(changed) == summary["staff changed"] >= 1
