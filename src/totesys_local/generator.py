"""The totesys data generator (``totesys seed``) and activity simulator (``totesys simulate``).

``seed`` fills an empty database with data shaped like the real totesys (SPEC section 2, "What the
real data looks like"): at scale 1 the same row counts, value ranges, NULL rates and timestamp
patterns; scale N multiplies the order-like tables. Everything is generated with vectorised numpy
from one seed and written with COPY in a single transaction.

``simulate`` applies a few minutes of business activity at the database's current time, so an
incremental pipeline run has real inserts and updates to move.
"""
import datetime as dt
import io
import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import pg8000.native
import pyarrow as pa
import pyarrow.csv as pa_csv
from pg8000.native import identifier

from totesys_local.errors import LocalError
from totesys_local import generator_data as vocab
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url
from utils.errors import CredentialsError, DatabaseUnavailableError, TotesysError
from utils.catalog.source import SOURCE_SCHEMAS, SOURCE_TABLES

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "sql" / "totesys_schema.sql"

# Insertion order of the seed (every table after the ones it references).
SEED_ORDER = ("address", "counterparty", "currency", "department", "design", "staff",
              "payment_type", "sales_order", "purchase_order", "transaction", "payment")
TOTESYS_TYPES = ("PaymentTypeName", "TransactionType")
TOTESYS_RELATIONS = SOURCE_TABLES + ("_prisma_migrations",)

# Sizes of the real database (November 2024 snapshot) at scale 1.
SALES_ORDERS = 11_187
PURCHASE_ORDERS = 4_649
DESIGNS = 473
ADDRESSES = 30
# The real data begins when the dimension tables were loaded and runs ~2 years, weekdays 08:00-19:00.
DATA_START = np.datetime64("2022-11-03T14:20:49.962", "ms")
FIRST_ORDER_TIME = np.datetime64("2022-11-03T14:21:00", "ms")
LAST_DAY = np.datetime64("2024-11-14", "D")
WORK_OPENS_MS = 8 * 3_600_000
WORK_CLOSES_MS = 19 * 3_600_000
NO_FRACTION_RATE = 0.03       # timestamps that serialise with no fractional part
PAID_LATER_RATE = 0.60        # payments later updated false -> true
PAID_LAG_MS = (13 * 3_600_000 + 1000, 6 * 86_400_000)
AGREED_DAYS_MAX = 7
UNITS_SOLD = (1_001, 99_973)
UNIT_PRICE_CENTS = (200, 400)
ITEM_QUANTITY = (1, 999)
ITEM_PRICE_CENTS = (300, 100_000)
PAYMENT_CENTS = (6_578, 98_145_144)
ACCOUNT_NUMBER = (10_000_000, 99_999_999)
ITEM_CODE_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)

# Simulated business activity per minute (a busy day: a few orders an hour).
RATE_PER_MINUTE = {
    "sales_order": 0.05, "purchase_order": 0.02, "design": 1 / 600, "pay": 0.06,
    "sales_order_update": 0.01, "address": 1 / 120, "staff": 1 / 240,
}
EPOCH = dt.datetime(1970, 1, 1)
T = TypeVar("T")
# (start ms since epoch, length ms) of every working window: ``_working_windows``.
Windows = Tuple[np.ndarray, np.ndarray]


class GeneratorError(LocalError, TotesysError):
    """seed/simulate cannot do what was asked (bad argument, unreachable or unsuitable database)."""


# -- generation (pure, no database) -------------------------------------------------------------

def _check_scale(scale: Any) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise GeneratorError(f"scale must be a number greater than 0, got {scale!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise GeneratorError(f"scale must be a number greater than 0, got {scale!r}")
    return value


def _working_windows() -> Windows:
    """Start (ms since epoch) and length (ms) of every weekday's 08:00-19:00 window of the data."""
    days: Any = np.arange(DATA_START.astype("datetime64[D]"), LAST_DAY + 1, dtype="datetime64[D]")
    days = days[np.is_busday(days)]
    day_ms = days.astype("datetime64[ms]").astype(np.int64)
    starts = day_ms + WORK_OPENS_MS
    ends = day_ms + WORK_CLOSES_MS
    starts[0] = max(starts[0], FIRST_ORDER_TIME.astype(np.int64))
    return starts, ends - starts


def _working_times(rng: np.random.Generator, count: int, windows: Windows) -> np.ndarray:
    """``count`` sorted ms timestamps spread uniformly over the working windows (end exclusive)."""
    starts, lengths = windows
    cumulative = np.cumsum(lengths)
    position = np.sort(rng.integers(0, cumulative[-1], size=count))
    day = np.searchsorted(cumulative, position, side="right")
    return starts[day] + position - (cumulative[day] - lengths[day])


def _drop_fraction(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    """Truncate ~3% of timestamps to whole seconds, as some real rows have no milliseconds."""
    whole = rng.random(times.size) < NO_FRACTION_RATE
    times = times.copy()
    times[whole] -= times[whole] % 1000
    return times


def _date_text(times_ms: np.ndarray, offset_days: Union[int, np.ndarray]) -> np.ndarray:
    days = times_ms.astype("datetime64[ms]").astype("datetime64[D]") + offset_days
    return np.datetime_as_string(days, unit="D")


def _money(cents: Any) -> pa.Array:
    """numeric(10,2) from integer cents, exactly: decimal128 stores the unscaled 128-bit integer."""
    cents = np.asarray(cents, dtype=np.int64)
    words = np.zeros((cents.size, 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(10, 2), cents.size, [None, pa.py_buffer(words.tobytes())])


def _ids(count: int) -> np.ndarray:
    return np.arange(1, count + 1, dtype=np.int32)


def _table(name: str, columns: Mapping[str, Any]) -> pa.Table:
    schema = SOURCE_SCHEMAS[name]
    return pa.Table.from_arrays([pa.array(columns[field.name], type=field.type)
                                 if not isinstance(columns[field.name], pa.Array)
                                 else columns[field.name].cast(field.type)
                                 for field in schema], schema=schema)


def _constant_times(count: int, value: np.datetime64 = DATA_START) -> np.ndarray:
    return np.full(count, value.astype(np.int64), dtype=np.int64)


def _with_nulls(rng: np.random.Generator, values: Iterable[T], null_count: int) -> List[Optional[T]]:
    """``values`` as a list with exactly ``null_count`` randomly placed None."""
    nullable: List[Optional[T]] = list(values)
    for index in rng.permutation(len(nullable))[:null_count]:
        nullable[index] = None
    return nullable


def _dimension_tables(rng: np.random.Generator) -> Dict[str, pa.Table]:
    n = ADDRESSES
    street = [f"{number} {name} {suffix}" for number, name, suffix in zip(
        rng.integers(1, 10_000, n), rng.choice(vocab.STREET_NAMES, n), rng.choice(vocab.STREET_SUFFIXES, n))]
    # 29 distinct countries over 30 addresses: one country appears twice.
    countries = list(vocab.COUNTRIES) + [vocab.COUNTRIES[rng.integers(len(vocab.COUNTRIES))]]
    countries = [countries[i] for i in rng.permutation(n)]
    times = _constant_times(n)
    tables = {"address": _table("address", {
        "address_id": _ids(n),
        "address_line_1": street,
        "address_line_2": _with_nulls(rng, rng.choice(vocab.LINE_2_WORDS, n), 20),
        "district": _with_nulls(rng, rng.choice(vocab.DISTRICTS, n), 14),
        "city": rng.choice(vocab.CITIES, n),
        "postal_code": [f"{code:05d}" for code in rng.integers(0, 100_000, n)],
        "country": countries,
        "phone": [f"{a} {b}" for a, b in zip(rng.integers(1000, 10_000, n),
                                             rng.integers(100_000, 1_000_000, n))],
        "created_at": times, "last_updated": times,
    })}
    m = len(vocab.COUNTERPARTY_NAMES)

    def contacts() -> List[str]:
        return [f"{first} {last}" for first, last in zip(
            rng.choice(vocab.CONTACT_FIRST, m), rng.choice(vocab.CONTACT_LAST, m))]
    times = _constant_times(m)
    tables["counterparty"] = _table("counterparty", {
        "counterparty_id": _ids(m),
        "counterparty_legal_name": list(vocab.COUNTERPARTY_NAMES),
        "legal_address_id": rng.choice(n, m, replace=False) + 1,
        "commercial_contact": contacts(), "delivery_contact": contacts(),
        "created_at": times, "last_updated": times,
    })
    times = _constant_times(len(vocab.CURRENCY_CODES))
    tables["currency"] = _table("currency", {
        "currency_id": _ids(len(times)), "currency_code": list(vocab.CURRENCY_CODES),
        "created_at": times, "last_updated": times,
    })
    times = _constant_times(len(vocab.DEPARTMENTS))
    tables["department"] = _table("department", {
        "department_id": _ids(len(times)),
        "department_name": [d[0] for d in vocab.DEPARTMENTS],
        "location": [d[1] for d in vocab.DEPARTMENTS],
        "manager": [d[2] for d in vocab.DEPARTMENTS],
        "created_at": times, "last_updated": times,
    })
    times = _constant_times(len(vocab.STAFF))
    tables["staff"] = _table("staff", {
        "staff_id": _ids(len(times)),
        "first_name": [s[0] for s in vocab.STAFF],
        "last_name": [s[1] for s in vocab.STAFF],
        "department_id": [s[2] for s in vocab.STAFF],
        "email_address": [staff_email(s[0], s[1]) for s in vocab.STAFF],
        "created_at": times, "last_updated": times,
    })
    times = _constant_times(len(vocab.PAYMENT_TYPES))
    tables["payment_type"] = _table("payment_type", {
        "payment_type_id": _ids(len(times)), "payment_type_name": list(vocab.PAYMENT_TYPES),
        "created_at": times, "last_updated": times,
    })
    return tables


def staff_email(first_name: str, last_name: str) -> str:
    """The company's address scheme: first.last@terrifictotes.com, lower case."""
    return f"{first_name.lower()}.{last_name.lower()}@terrifictotes.com"


def _design_file_names(rng: np.random.Generator, names: Sequence[str], times_ms: np.ndarray) -> List[str]:
    dates = np.char.replace(_date_text(times_ms, 0), "-", "")
    letters = rng.integers(ord("a"), ord("z") + 1, size=(len(names), 4), dtype=np.uint8)
    suffix = letters.view("S4").ravel().astype(str)
    return [f"{name.lower()}-{day}-{tag}.json" for name, day, tag in zip(names, dates, suffix)]


def generate_tables(scale: float = 1.0, seed: Optional[int] = 42) -> Dict[str, pa.Table]:
    """Return {table: pyarrow.Table} of a seeded totesys, in insertion order (no database needed).

    Same (scale, seed), same tables. Raises GeneratorError when scale is not a number > 0.
    """
    scale = _check_scale(scale)
    rng = np.random.default_rng(seed)
    windows = _working_windows()
    tables = _dimension_tables(rng)
    n_staff, n_counterparty = len(vocab.STAFF), len(vocab.COUNTERPARTY_NAMES)
    n_currency = len(vocab.CURRENCY_CODES)

    # Designs: the first of each name exist from the start; the catalogue grows over time.
    initial = len(vocab.DESIGN_NAMES)
    n_design = max(initial, round(DESIGNS * scale))
    design_times = np.concatenate([_constant_times(initial),
                                   _drop_fraction(rng, _working_times(rng, n_design - initial, windows))])
    design_times.sort()
    design_names = list(vocab.DESIGN_NAMES) + list(rng.choice(vocab.DESIGN_NAMES, n_design - initial))
    tables["design"] = _table("design", {
        "design_id": _ids(n_design), "created_at": design_times,
        "design_name": design_names,
        "file_location": rng.choice(vocab.DESIGN_LOCATIONS, n_design),
        "file_name": _design_file_names(rng, design_names, design_times),
        "last_updated": design_times,
    })

    def order_times(count: int) -> np.ndarray:
        return np.sort(_drop_fraction(rng, _working_times(rng, count, windows)))

    n_sales = max(1, round(SALES_ORDERS * scale))
    sales_times = order_times(n_sales)
    # An order only uses a design that already exists when the order is placed.
    known_designs = np.searchsorted(design_times, sales_times, side="right")
    sales = {
        "sales_order_id": _ids(n_sales), "created_at": sales_times, "last_updated": sales_times,
        "design_id": (rng.random(n_sales) * known_designs).astype(np.int64) + 1,
        "staff_id": rng.integers(1, n_staff + 1, n_sales),
        "counterparty_id": rng.integers(1, n_counterparty + 1, n_sales),
        "units_sold": rng.integers(UNITS_SOLD[0], UNITS_SOLD[1] + 1, n_sales),
        "unit_price": rng.integers(UNIT_PRICE_CENTS[0], UNIT_PRICE_CENTS[1] + 1, n_sales),
        "currency_id": rng.integers(1, n_currency + 1, n_sales),
        "agreed_delivery_date": _date_text(sales_times, rng.integers(0, AGREED_DAYS_MAX + 1, n_sales)),
        "agreed_payment_date": _date_text(sales_times, rng.integers(0, AGREED_DAYS_MAX + 1, n_sales)),
        "agreed_delivery_location_id": rng.integers(1, ADDRESSES + 1, n_sales),
    }
    sales_cents = sales["units_sold"] * sales["unit_price"]
    sales["unit_price"] = _money(sales["unit_price"])
    tables["sales_order"] = _table("sales_order", sales)

    n_purchase = max(1, round(PURCHASE_ORDERS * scale))
    purchase_times = order_times(n_purchase)
    codes = ITEM_CODE_ALPHABET[rng.integers(0, ITEM_CODE_ALPHABET.size, size=(n_purchase, 7))]
    purchase = {
        "purchase_order_id": _ids(n_purchase), "created_at": purchase_times, "last_updated": purchase_times,
        "staff_id": rng.integers(1, n_staff + 1, n_purchase),
        "counterparty_id": rng.integers(1, n_counterparty + 1, n_purchase),
        "item_code": codes.view("S7").ravel().astype(str),
        "item_quantity": rng.integers(ITEM_QUANTITY[0], ITEM_QUANTITY[1] + 1, n_purchase),
        "item_unit_price": rng.integers(ITEM_PRICE_CENTS[0], ITEM_PRICE_CENTS[1] + 1, n_purchase),
        "currency_id": rng.integers(1, n_currency + 1, n_purchase),
        "agreed_delivery_date": _date_text(purchase_times, rng.integers(0, AGREED_DAYS_MAX + 1, n_purchase)),
        "agreed_payment_date": _date_text(purchase_times, rng.integers(0, AGREED_DAYS_MAX + 1, n_purchase)),
        "agreed_delivery_location_id": rng.integers(1, ADDRESSES + 1, n_purchase),
    }
    purchase_cents = purchase["item_quantity"] * purchase["item_unit_price"]
    purchase["item_unit_price"] = _money(purchase["item_unit_price"])
    tables["purchase_order"] = _table("purchase_order", purchase)

    # One transaction per order, numbered in time order across both kinds; one payment each.
    is_sale = np.concatenate([np.ones(n_sales, bool), np.zeros(n_purchase, bool)])
    order = np.argsort(np.concatenate([sales_times, purchase_times]), kind="stable")
    is_sale = is_sale[order]
    order_index = np.concatenate([np.arange(n_sales), np.arange(n_purchase)])[order]
    created = np.concatenate([sales_times, purchase_times])[order]
    n_tx = n_sales + n_purchase
    tables["transaction"] = _table("transaction", {
        "transaction_id": _ids(n_tx),
        "transaction_type": np.where(is_sale, "SALE", "PURCHASE"),
        "sales_order_id": pa.array(order_index + 1, mask=~is_sale, type=pa.int32()),
        "purchase_order_id": pa.array(order_index + 1, mask=is_sale, type=pa.int32()),
        "created_at": created, "last_updated": created,
    })

    def pick(sales_values: Any, purchase_values: Any) -> np.ndarray:
        return np.concatenate([np.asarray(sales_values), np.asarray(purchase_values)])[order]

    paid = rng.random(n_tx) < PAID_LATER_RATE
    lag = rng.integers(PAID_LAG_MS[0], PAID_LAG_MS[1] + 1, n_tx)
    updated = np.where(paid, _drop_fraction(rng, created + lag), created)
    tables["payment"] = _table("payment", {
        "payment_id": _ids(n_tx), "created_at": created, "last_updated": updated,
        "transaction_id": _ids(n_tx),
        "counterparty_id": pick(sales["counterparty_id"], purchase["counterparty_id"]),
        "payment_amount": _money(np.clip(pick(sales_cents, purchase_cents), *PAYMENT_CENTS)),
        "currency_id": pick(sales["currency_id"], purchase["currency_id"]),
        "payment_type_id": np.where(is_sale, vocab.SALES_RECEIPT_ID, vocab.PURCHASE_PAYMENT_ID),
        "paid": paid,
        "payment_date": pick(sales["agreed_payment_date"], purchase["agreed_payment_date"]),
        "company_ac_number": rng.integers(ACCOUNT_NUMBER[0], ACCOUNT_NUMBER[1] + 1, n_tx),
        "counterparty_ac_number": rng.integers(ACCOUNT_NUMBER[0], ACCOUNT_NUMBER[1] + 1, n_tx),
    })
    return {name: tables[name] for name in SEED_ORDER}


# -- database side ------------------------------------------------------------------------------

def _connect(target_url: str, timezone: Optional[str] = "UTC") -> Any:
    """A connection to ``target_url`` whose session zone is ``timezone`` (None: the database's own)."""
    try:
        return connect_to_db(credentials=credentials_from_url(target_url), timezone=timezone)
    except (DatabaseUnavailableError, CredentialsError) as err:
        raise GeneratorError(str(err)) from None


def _database_message(err: Exception) -> str:
    detail = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    return detail.get("M") or (str(err.args[0]) if err.args else type(err).__name__)


def totesys_objects(conn: Any) -> List[str]:
    """Names of the totesys tables and enum types already in the connection's search path."""
    tables = conn.run(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(current_schemas(false)) AND c.relname = ANY(CAST(:names AS text[])) "
        "ORDER BY 1", names=list(TOTESYS_RELATIONS))
    types = conn.run(
        "SELECT t.typname FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = ANY(current_schemas(false)) AND t.typname = ANY(CAST(:names AS text[])) "
        "ORDER BY 1", names=list(TOTESYS_TYPES))
    return [row[0] for row in tables] + [row[0] for row in types]


def _schema_statements() -> List[str]:
    lines = [line for line in SCHEMA_PATH.read_text().splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def _copy_table(conn: Any, name: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
    buffer.seek(0)
    columns = ", ".join(identifier(column) for column in table.column_names)
    conn.run(f"COPY {identifier(name)} ({columns}) FROM STDIN WITH (FORMAT csv)", stream=buffer)


def _drop_foreign_keys(conn: Any) -> List[List[str]]:
    """Drop the totesys foreign keys just created; return what ``_restore_foreign_keys`` needs.

    Checking a foreign key row by row during COPY is most of a large seed's time; adding the
    constraint back afterwards validates every row in one set-based query instead.
    """
    foreign_keys = conn.run(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_catalog.pg_constraint k "
        "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.contype = 'f' AND n.nspname = current_schema() AND c.relname = ANY(CAST(:names AS text[])) "
        "ORDER BY c.relname, k.conname", names=list(SOURCE_TABLES))
    for table, name, _ in foreign_keys:
        conn.run(f"ALTER TABLE {identifier(table)} DROP CONSTRAINT {identifier(name)}")
    return foreign_keys


def _restore_foreign_keys(conn: Any, foreign_keys: Sequence[Sequence[str]]) -> None:
    for table, name, definition in foreign_keys:
        # The definition is PostgreSQL's own rendering of the constraint created from our schema
        # file a moment ago in this transaction, not outside input.
        conn.run(f"ALTER TABLE {identifier(table)} ADD CONSTRAINT {identifier(name)} {definition}")


def _in_transaction(conn: Any, work: Callable[[Any], T]) -> T:
    """Run ``work(conn)`` in one transaction: commit on success, roll back on any error."""
    conn.run("START TRANSACTION")
    try:
        result = work(conn)
    except BaseException:
        try:
            conn.run("ROLLBACK")
        except pg8000.exceptions.InterfaceError:
            pass  # the connection is gone: the server rolls back on its own
        raise
    conn.run("COMMIT")
    return result


def seed(target_url: str, scale: float = 1.0, seed: Optional[int] = 42) -> Dict[str, int]:
    """Create the totesys schema in the database at ``target_url`` and fill it.

    Returns {table: rows written} for the eleven source tables, in insertion order. Everything
    (schema, COPY of every table, sequences) happens in one transaction, so a failure changes
    nothing. Raises GeneratorError (one line) when scale is not > 0, the database cannot be
    reached or refuses the credentials, or it already holds a totesys table or type.
    """
    scale = _check_scale(scale)
    conn = _connect(target_url)
    try:
        existing = totesys_objects(conn)
        if existing:
            shown = ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
            raise GeneratorError(
                f"database already holds totesys tables or types ({shown}): "
                "seed needs a database without them")
        tables = generate_tables(scale, seed)

        migrated = DATA_START.item().replace(tzinfo=dt.timezone.utc)

        def write(conn: Any) -> None:
            for statement in _schema_statements():
                conn.run(statement)
            foreign_keys = _drop_foreign_keys(conn)
            for name, table in tables.items():
                _copy_table(conn, name, table)
                conn.run("SELECT setval(pg_get_serial_sequence(:table, :column), :value)",
                         table=identifier(name), column=f"{name}_id", value=table.num_rows)
            _restore_foreign_keys(conn, foreign_keys)
            conn.run("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, "
                     "started_at, applied_steps_count) "
                     "VALUES (:id, :checksum, :finished, :name, :started, 1)",
                     id=vocab.PRISMA_MIGRATION["id"], checksum=vocab.PRISMA_MIGRATION["checksum"],
                     name=vocab.PRISMA_MIGRATION["migration_name"],
                     started=migrated, finished=migrated)
            conn.run("ANALYZE")
        _in_transaction(conn, write)
    except pg8000.exceptions.DatabaseError as err:
        raise GeneratorError(f"seeding failed, nothing written: {_database_message(err)}") from None
    except pg8000.exceptions.InterfaceError as err:
        raise GeneratorError(f"lost the database connection while seeding, nothing written: {err}") from None
    finally:
        close_db_connection(conn)
    return {name: table.num_rows for name, table in tables.items()}


# -- simulate ------------------------------------------------------------------------------------

def _check_minutes(minutes: Any) -> float:
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        raise GeneratorError(f"minutes must be a number greater than 0, got {minutes!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise GeneratorError(f"minutes must be a number greater than 0, got {minutes!r}")
    return value


def _to_us(moment: dt.datetime) -> int:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def _from_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=int(ms))


def _event_times(rng: np.random.Generator, start_ms: int, end_ms: int, count: int) -> np.ndarray:
    """``count`` sorted ms instants in [start_ms, end_ms], distinct whenever the window allows."""
    span = end_ms - start_ms + 1
    if count <= span:
        return np.sort(rng.choice(span, size=count, replace=False)) + start_ms
    return np.sort(rng.integers(0, span, size=count)) + start_ms


def _plan_counts(rng: np.random.Generator, minutes: float) -> Dict[str, int]:
    def draw(kind: str) -> int:
        return int(rng.poisson(RATE_PER_MINUTE[kind] * minutes))
    busy = minutes >= 30
    return {
        "sales_order": max(1, draw("sales_order")),
        "purchase_order": max(int(busy), draw("purchase_order")),
        "design": draw("design"),
        "pay": max(1, draw("pay")),
        "sales_order_update": max(1, draw("sales_order_update")),
        "address": max(int(busy), draw("address")),
        "staff": max(int(busy), draw("staff")),
    }


class _Activity:
    """One simulate call: the rows it may touch and the statements that change them."""

    ID_QUERIES = {
        "address": "SELECT address_id FROM address ORDER BY 1",
        "counterparty": "SELECT counterparty_id FROM counterparty ORDER BY 1",
        "currency": "SELECT currency_id FROM currency ORDER BY 1",
        "department": "SELECT department_id FROM department ORDER BY 1",
        "design": "SELECT design_id FROM design ORDER BY 1",
        "staff": "SELECT staff_id FROM staff ORDER BY 1",
    }
    AGREED_DATE_UPDATES = (
        "UPDATE sales_order SET agreed_delivery_date = to_char(CAST(agreed_delivery_date AS date) "
        "+ CAST(:days AS integer), 'YYYY-MM-DD'), last_updated = :at WHERE sales_order_id = :id",
        "UPDATE sales_order SET agreed_payment_date = to_char(CAST(agreed_payment_date AS date) "
        "+ CAST(:days AS integer), 'YYYY-MM-DD'), last_updated = :at WHERE sales_order_id = :id",
    )

    def __init__(self, conn: Any, rng: np.random.Generator, before: dt.datetime) -> None:
        self.conn, self.rng = conn, rng
        self.ids = {table: [row[0] for row in conn.run(query)] for table, query in self.ID_QUERIES.items()}
        self.unpaid = [row[0] for row in conn.run(
            "SELECT payment_id FROM payment WHERE NOT paid AND last_updated < :before ORDER BY 1",
            before=before)]
        self.sales_orders = [row[0] for row in conn.run(
            "SELECT sales_order_id FROM sales_order WHERE last_updated < :before ORDER BY 1", before=before)]
        self.addresses = [row[0] for row in conn.run(
            "SELECT address_id FROM address WHERE last_updated < :before ORDER BY 1", before=before)]
        self.staff = conn.run(
            "SELECT staff_id, first_name, department_id, last_name FROM staff WHERE last_updated < :before "
            "ORDER BY 1",
            before=before)
        self.new_payments: List[int] = []
        self.new_sales_orders: List[int] = []

    def _choice(self, values: Sequence[T]) -> T:
        return values[int(self.rng.integers(len(values)))]

    def _int(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def _agreed(self, at: dt.datetime) -> str:
        return (at.date() + dt.timedelta(days=self._int(0, AGREED_DAYS_MAX))).isoformat()

    def new_order(self, kind: str, at: dt.datetime) -> None:
        counterparty = self._choice(self.ids["counterparty"])
        currency = self._choice(self.ids["currency"])
        payment_date = self._agreed(at)
        common = dict(at=at, staff=self._choice(self.ids["staff"]), counterparty=counterparty,
                      currency=currency, delivery=self._agreed(at), payment_date=payment_date,
                      location=self._choice(self.ids["address"]))
        if kind == "sales_order":
            units, cents = self._int(*UNITS_SOLD), self._int(*UNIT_PRICE_CENTS)
            order_id = self.conn.run(
                "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) VALUES (:at, :at, :design, :staff, :counterparty, :units, "
                ":price, :currency, :delivery, :payment_date, :location) RETURNING sales_order_id",
                design=self._choice(self.ids["design"]), units=units,
                price=Decimal(cents).scaleb(-2), **common)[0][0]
            self.new_sales_orders.append(order_id)
            tx_id = self.conn.run(
                "INSERT INTO transaction (transaction_type, sales_order_id, created_at, last_updated) "
                "VALUES ('SALE', :order_id, :at, :at) RETURNING transaction_id",
                order_id=order_id, at=at)[0][0]
            payment_type = vocab.SALES_RECEIPT_ID
        else:
            quantity, cents = self._int(*ITEM_QUANTITY), self._int(*ITEM_PRICE_CENTS)
            alphabet = ITEM_CODE_ALPHABET.tobytes().decode()
            code = "".join(alphabet[i] for i in self.rng.integers(0, len(alphabet), 7))
            order_id = self.conn.run(
                "INSERT INTO purchase_order (created_at, last_updated, staff_id, counterparty_id, item_code, "
                "item_quantity, item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                "agreed_delivery_location_id) VALUES (:at, :at, :staff, :counterparty, :code, :quantity, "
                ":price, :currency, :delivery, :payment_date, :location) RETURNING purchase_order_id",
                code=code, quantity=quantity, price=Decimal(cents).scaleb(-2), **common)[0][0]
            tx_id = self.conn.run(
                "INSERT INTO transaction (transaction_type, purchase_order_id, created_at, last_updated) "
                "VALUES ('PURCHASE', :order_id, :at, :at) RETURNING transaction_id",
                order_id=order_id, at=at)[0][0]
            payment_type = vocab.PURCHASE_PAYMENT_ID
            units = quantity
        amount = min(max(units * cents, PAYMENT_CENTS[0]), PAYMENT_CENTS[1])
        payment_id = self.conn.run(
            "INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount, "
            "currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number) "
            "VALUES (:at, :at, :tx, :counterparty, :amount, :currency, :payment_type, false, :payment_date, "
            ":company, :theirs) RETURNING payment_id",
            at=at, tx=tx_id, counterparty=counterparty, amount=Decimal(amount).scaleb(-2), currency=currency,
            payment_type=payment_type, payment_date=payment_date,
            company=self._int(*ACCOUNT_NUMBER), theirs=self._int(*ACCOUNT_NUMBER))[0][0]
        self.new_payments.append(payment_id)

    def new_design(self, at: dt.datetime) -> None:
        name = self._choice(vocab.DESIGN_NAMES)
        tag = "".join(chr(c) for c in self.rng.integers(ord("a"), ord("z") + 1, 4))
        self.conn.run(
            "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated) "
            "VALUES (:at, :name, :location, :file, :at)", at=at, name=name,
            location=self._choice(vocab.DESIGN_LOCATIONS),
            file=f"{name.lower()}-{at:%Y%m%d}-{tag}.json")

    def pay(self, payment_id: int, at: dt.datetime) -> None:
        self.conn.run("UPDATE payment SET paid = true, last_updated = :at WHERE payment_id = :id",
                      at=at, id=payment_id)

    def update_sales_order(self, order_id: int, at: dt.datetime) -> None:
        change = self._int(0, 2)
        if change == 0:
            self.conn.run("UPDATE sales_order SET units_sold = :units, last_updated = :at "
                          "WHERE sales_order_id = :id", units=self._int(*UNITS_SOLD), at=at, id=order_id)
        else:
            self.conn.run(self.AGREED_DATE_UPDATES[change - 1], days=self._int(1, 5), at=at, id=order_id)

    def change_address(self, address_id: int, at: dt.datetime) -> None:
        if self._int(0, 1):
            self.conn.run("UPDATE address SET phone = :phone, last_updated = :at WHERE address_id = :id",
                          phone=f"{self._int(1000, 9999)} {self._int(100_000, 999_999)}",
                          at=at, id=address_id)
        else:
            street = (f"{self._int(1, 9999)} {self._choice(vocab.STREET_NAMES)} "
                      f"{self._choice(vocab.STREET_SUFFIXES)}")
            self.conn.run("UPDATE address SET address_line_1 = :street, last_updated = :at "
                          "WHERE address_id = :id", street=street, at=at, id=address_id)

    def change_staff(self, member: Sequence[Any], at: dt.datetime) -> None:
        staff_id, first_name, department_id, current_last_name = member
        others = [d for d in self.ids["department"] if d != department_id]
        if others and self._int(0, 1):
            self.conn.run("UPDATE staff SET department_id = :department, last_updated = :at "
                          "WHERE staff_id = :id", department=self._choice(others), at=at, id=staff_id)
        else:
            # a real change: never the surname the member already has
            last_name = self._choice([name for name in vocab.OTHER_LAST_NAMES if name != current_last_name])
            self.conn.run("UPDATE staff SET last_name = :last, email_address = :email, last_updated = :at "
                          "WHERE staff_id = :id", last=last_name, email=staff_email(first_name, last_name),
                          at=at, id=staff_id)


def simulate(target_url: str, minutes: float, seed: Optional[int] = None, now: Optional[dt.datetime] = None,
             cancel: int = 0) -> Dict[str, int]:
    """Apply ``minutes`` of business activity to the totesys at ``target_url``, in one transaction.

    New sales and purchase orders (each with its transaction and an unpaid payment), payments
    marked paid, updates to existing sales orders, and now and then a new design, a changed
    address or a changed staff member. Each call makes at least one new sales order, one payment
    paid and one sales-order update; with minutes >= 30 also at least one purchase order, one
    address change and one staff change.

    The M simulated minutes are compressed into the M seconds ending at the database's now() on its
    own clock, in its own configured time zone, as totesys writes its timestamps (or ``now``, when
    given: a naive datetime in the source's zone, or an aware one, converted to that zone): a source
    in New York or Tokyo gets rows stamped with its local wall time, which is what the ingest's
    windows compare with. Every created_at/last_updated written lies in
    [end - minutes seconds, end], with millisecond precision and increasing per event, and an
    updated row's new last_updated is later than its old one (only rows last changed before the
    window are chosen). ``cancel`` > 0 also cancels that many unpaid sales orders made before this
    call: each is hard-deleted with its transaction and payment, in foreign-key order (payment,
    transaction, order), so the pipeline has deletes to detect. Returns {what happened: count}.
    Raises GeneratorError when minutes is not > 0, cancel is not a whole number >= 0, the database
    cannot be reached, or it holds no totesys tables.
    """
    minutes = _check_minutes(minutes)
    if isinstance(cancel, bool) or not isinstance(cancel, int) or cancel < 0:
        raise GeneratorError(f"cancel must be a whole number of orders >= 0, got {cancel!r}")
    rng = np.random.default_rng(seed)
    # No TimeZone startup parameter: the session takes the source's configured zone (SPEC 4.9).
    conn = _connect(target_url, timezone=None)
    try:
        present = set(totesys_objects(conn))
        missing = [name for name in SOURCE_TABLES if name not in present]
        if missing:
            raise GeneratorError(
                f"database has no totesys tables (missing {', '.join(missing)}): run totesys seed first")
        return _in_transaction(conn, lambda conn: {**_cancel_orders(conn, rng, cancel),
                                                   **_simulate(conn, rng, minutes, now)})
    except pg8000.exceptions.DatabaseError as err:
        raise GeneratorError(f"simulation failed, nothing written: {_database_message(err)}") from None
    except pg8000.exceptions.InterfaceError as err:
        raise GeneratorError(
            f"lost the database connection while simulating, nothing written: {err}") from None
    finally:
        close_db_connection(conn)


def _cancel_orders(conn: Any, rng: np.random.Generator, count: int) -> Dict[str, int]:
    """Hard-delete ``count`` random unpaid sales orders with their transaction and payment (fewer
    when fewer exist); return {"sales orders cancelled (deleted)": n} (empty when count is 0)."""
    if not count:
        return {}
    candidates = conn.run(
        "SELECT t.sales_order_id, t.transaction_id, p.payment_id FROM transaction t "
        "JOIN payment p ON p.transaction_id = t.transaction_id "
        "WHERE t.sales_order_id IS NOT NULL AND NOT p.paid ORDER BY 1")
    chosen = [candidates[i] for i in sorted(rng.permutation(len(candidates))[:count])]
    for column, table, position in (("payment_id", "payment", 2), ("transaction_id", "transaction", 1),
                                    ("sales_order_id", "sales_order", 0)):
        # Fixed table and column names, quoted; the ids are bound.
        conn.run(f"DELETE FROM {pg8000.native.identifier(table)} "  # nosec B608
                 f"WHERE {pg8000.native.identifier(column)} = ANY(CAST(:ids AS integer[]))",
                 ids=[row[position] for row in chosen])
    return {"sales orders cancelled (deleted)": len(chosen)}


def _simulate(conn: Any, rng: np.random.Generator, minutes: float,
              now: Optional[dt.datetime]) -> Dict[str, int]:
    # LOCALTIMESTAMP is now() in the session's time zone (the source's own): the transaction's start on
    # the DB clock, as the source's wall time. An aware ``now`` is turned into that wall time too.
    if now is None:
        end = conn.run("SELECT LOCALTIMESTAMP")[0][0]
    elif now.tzinfo is not None:
        end = conn.run("SELECT timezone(current_setting('TimeZone'), CAST(:moment AS timestamptz))",
                       moment=now)[0][0]
    else:
        end = now
    end_us = _to_us(end)
    # Whole milliseconds inside [end - minutes, end]: round the end down and the start up.
    end_ms = end_us // 1000
    start_ms = -((round(minutes * 1_000_000) - end_us) // 1000)
    before = _from_ms(start_ms)
    activity = _Activity(conn, rng, before)
    counts = _plan_counts(rng, minutes)

    events: List[Any] = (["sales_order"] * counts["sales_order"]
                         + ["purchase_order"] * counts["purchase_order"] + ["design"] * counts["design"])
    paid_existing = [int(i) for i in rng.permutation(activity.unpaid)[:counts["pay"]]]
    events += [("pay", i) for i in paid_existing]
    events += [("sales_order_update", activity._choice(activity.sales_orders))
               for _ in range(counts["sales_order_update"] if activity.sales_orders else 0)]
    events += [("address", activity._choice(activity.addresses))
               for _ in range(counts["address"] if activity.addresses else 0)]
    events += [("staff", activity._choice(activity.staff))
               for _ in range(counts["staff"] if activity.staff else 0)]
    events = [events[i] for i in rng.permutation(len(events))]
    # Rows created in this call stand in when no older row qualifies; they are changed last,
    # after they exist, so their last_updated moves forward too.
    new_orders = counts["sales_order"] + counts["purchase_order"]
    events += [("pay_new", None)] * min(counts["pay"] - len(paid_existing), new_orders)
    if not activity.sales_orders:
        events += [("sales_order_update_new", None)] * counts["sales_order_update"]

    summary = {"new sales orders": 0, "new purchase orders": 0, "new transactions": 0, "new payments": 0,
               "new designs": 0, "payments marked paid": 0, "sales orders updated": 0,
               "addresses changed": 0, "staff changed": 0}
    target: Any  # what the event changes: a payment or order id, an address id, a staff row
    for event, ms in zip(events, _event_times(rng, start_ms, end_ms, len(events))):
        at = _from_ms(ms)
        kind, target = (event, None) if isinstance(event, str) else event
        if kind in ("sales_order", "purchase_order"):
            activity.new_order(kind, at)
            summary["new sales orders" if kind == "sales_order" else "new purchase orders"] += 1
            summary["new transactions"] += 1
            summary["new payments"] += 1
        elif kind == "design":
            activity.new_design(at)
            summary["new designs"] += 1
        elif kind in ("pay", "pay_new"):
            activity.pay(target if kind == "pay" else activity.new_payments.pop(0), at)
            summary["payments marked paid"] += 1
        elif kind in ("sales_order_update", "sales_order_update_new"):
            order_id = target if kind == "sales_order_update" else activity._choice(activity.new_sales_orders)
            activity.update_sales_order(order_id, at)
            summary["sales orders updated"] += 1
        elif kind == "address":
            activity.change_address(target, at)
            summary["addresses changed"] += 1
        else:
            activity.change_staff(target, at)
            summary["staff changed"] += 1
    return summary
