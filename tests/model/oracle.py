"""The model: what the warehouse must hold, computed from the source's audit and the snapshots the model
took itself just before each run, never from the pipeline's code, files or state.

``Model.snapshot()`` records ``pg_current_snapshot()`` right before a run starts (the driver is
sequential: nothing commits between that and the run's own snapshot, except what the history holds open
on purpose, which neither sees). A version is *visible* at a snapshot by the snapshot's rule (xid below
xmin, or below xmax and not in progress); the *state* at a snapshot is, per row, the latest visible
version (a deletion removes the row).

``Model.check(warehouse_url, complete)`` returns a list of mismatches (empty: all invariants hold):

* safety (every run): each fact version in the warehouse is a committed source version with the same
  values, held once, and was the current version of its row at some run's snapshot; each rejected row
  is a committed version; every dimension row is a row some snapshot saw;
* completeness (``complete``: after a successful run with nothing left waiting): for every complete
  run's snapshot, each row's version there is a fact (or, if the warehouse cannot hold it, rejected: a
  bad version is never a fact); the current views and the dimensions equal the state at the last
  complete snapshot (rows whose wall-clock stamps went backwards excepted and counted: ``ambiguous``;
  versions stamped ahead of the source's clock at the snapshot excepted and counted: ``held``; with
  ``strict_future`` only those ahead of its ceiling, the latest stamp a session of the zones in play over
  the last hour could have written: the pipeline holds them or quarantines them as future rows);
  the open deletions are exactly the rows present at an earlier complete snapshot and absent at the last
  (allowed also: rows only a failed run's snapshot saw).
"""
import datetime as dt
import json
from collections import Counter, defaultdict
from decimal import Decimal

from tests.model.source import FACT_TABLES
from tests.support.db import connect, run_sql
from utils.db.connection import close_db_connection, connect_to_db, credentials_from_url

# fact table: (warehouse table, [(warehouse column, source column, kind)]); kind: value, date (text
# 'YYYY-MM-DD' in the source) or stamp (a source timestamp split into <name>_date and <name>_time).
FACTS = {
    "sales_order": ("fact_sales_order", [
        ("created", "created_at", "stamp"), ("sales_staff_id", "staff_id", "value"),
        ("counterparty_id", "counterparty_id", "value"), ("units_sold", "units_sold", "value"),
        ("unit_price", "unit_price", "value"), ("currency_id", "currency_id", "value"),
        ("design_id", "design_id", "value"), ("agreed_payment_date", "agreed_payment_date", "date"),
        ("agreed_delivery_date", "agreed_delivery_date", "date"),
        ("agreed_delivery_location_id", "agreed_delivery_location_id", "value")]),
    "purchase_order": ("fact_purchase_order", [
        ("created", "created_at", "stamp"), ("staff_id", "staff_id", "value"),
        ("counterparty_id", "counterparty_id", "value"), ("item_code", "item_code", "value"),
        ("item_quantity", "item_quantity", "value"), ("item_unit_price", "item_unit_price", "value"),
        ("currency_id", "currency_id", "value"), ("agreed_delivery_date", "agreed_delivery_date", "date"),
        ("agreed_payment_date", "agreed_payment_date", "date"),
        ("agreed_delivery_location_id", "agreed_delivery_location_id", "value")]),
    "payment": ("fact_payment", [
        ("created", "created_at", "stamp"), ("transaction_id", "transaction_id", "value"),
        ("counterparty_id", "counterparty_id", "value"), ("payment_amount", "payment_amount", "value"),
        ("currency_id", "currency_id", "value"), ("payment_type_id", "payment_type_id", "value"),
        ("paid", "paid", "value"), ("payment_date", "payment_date", "date")]),
}
CURRENT_VIEWS = {"sales_order": "current_sales_order", "purchase_order": "current_purchase_order",
                 "payment": "current_payment"}
SMALLINT_MAX = 32767

# dimension: (source table, key, [source columns or (table, column) through a reference], warehouse SQL)
DIMENSIONS = {
    "dim_location": ("address", ["address_line_1", "address_line_2", "district", "city", "postal_code",
                                 "country", "phone"],
                     "SELECT location_id, address_line_1, address_line_2, district, city, postal_code, "
                     "country, phone FROM dim_location"),
    "dim_currency": ("currency", ["currency_code"], "SELECT currency_id, currency_code FROM dim_currency"),
    "dim_design": ("design", ["design_name", "file_location", "file_name"],
                   "SELECT design_id, design_name, file_location, file_name FROM dim_design"),
    "dim_payment_type": ("payment_type", ["payment_type_name"],
                         "SELECT payment_type_id, payment_type_name FROM dim_payment_type"),
    "dim_transaction": ("transaction", ["transaction_type", "sales_order_id", "purchase_order_id"],
                        "SELECT transaction_id, transaction_type, sales_order_id, purchase_order_id "
                        "FROM dim_transaction"),
    "dim_counterparty": ("counterparty", ["counterparty_legal_name",
                                          *(("address", c) for c in ("address_line_1", "address_line_2",
                                                                     "district", "city", "postal_code",
                                                                     "country", "phone"))],
                         "SELECT counterparty_id, counterparty_legal_name, "
                         "counterparty_legal_address_line_1, "
                         "counterparty_legal_address_line_2, counterparty_legal_district, "
                         "counterparty_legal_city, counterparty_legal_postal_code, "
                         "counterparty_legal_country, "
                         "counterparty_legal_phone_number FROM dim_counterparty"),
    "dim_staff": ("staff", ["first_name", "last_name", ("department", "department_name"),
                            ("department", "location"), "email_address"],
                  "SELECT staff_id, first_name, last_name, department_name, location, email_address "
                  "FROM dim_staff"),
}
REFERENCE = {("counterparty", "address"): "legal_address_id", ("staff", "department"): "department_id"}
# The rows a fact version references (a fact whose dimension row the warehouse lacks is parked).
FACT_REFERENCES = {
    "sales_order": {"design_id": "design", "staff_id": "staff", "counterparty_id": "counterparty",
                    "currency_id": "currency", "agreed_delivery_location_id": "address"},
    "purchase_order": {"staff_id": "staff", "counterparty_id": "counterparty", "currency_id": "currency",
                       "agreed_delivery_location_id": "address"},
    "payment": {"transaction_id": "transaction", "counterparty_id": "counterparty", "currency_id": "currency",
                "payment_type_id": "payment_type"},
}


# The snapshot, the wall clock, the zone, and the ceiling: UTC now plus the largest UTC offset the zone and
# the previous snapshot's zone had over the last hour (sampled every 5 minutes, and now).
CLOCK_SQL = (
    "SELECT pg_current_snapshot()::text, localtimestamp, current_setting('TimeZone'), "
    "(SELECT (now() AT TIME ZONE 'UTC') + max((t AT TIME ZONE z) - (t AT TIME ZONE 'UTC')) "
    " FROM unnest(ARRAY[current_setting('TimeZone'), coalesce(CAST(:previous AS text), "
    "current_setting('TimeZone'))]) AS z, "
    " (SELECT generate_series(now() - interval '1 hour', now(), interval '5 minutes') UNION SELECT now()) "
    " AS moments(t))")


class Snapshot:
    """A snapshot the model took before a run: its text and what became of the run."""

    def __init__(self, text, kind, wall_clock=None, zone=None, ceiling=None):
        xmin, xmax, xip = text.split(":")
        self.text, self.kind, self.wall_clock = text, kind, wall_clock
        self.zone, self.ceiling = zone, ceiling
        self.xmin, self.xmax = int(xmin), int(xmax)
        self.in_progress = {int(x) for x in xip.split(",") if x}
        self.complete = False  # set when its run succeeded with nothing left waiting

    def sees(self, xid):
        return xid < self.xmin or (xid < self.xmax and xid not in self.in_progress)


class Version:
    """One audit row: a committed (or rolled back: never visible) version of a source row."""

    def __init__(self, seq, table, row_id, op, last_updated, row_json, xid):
        self.seq, self.table, self.id, self.op = seq, table, row_id, op
        self.last_updated = last_updated
        self.row = json.loads(row_json, parse_float=Decimal)
        self.xid = int(xid)

    @property
    def key(self):
        return (self.table, self.id, self.last_updated)


def parse_stamp(text):
    return dt.datetime.fromisoformat(text) if text is not None else None


def _valid_date(text):
    try:
        return dt.date.fromisoformat(text) if text is not None and len(text) == 10 else None
    except ValueError:
        return None


def is_bad(version):
    """True when the warehouse cannot hold this fact version (the model's own rule, from the values)."""
    if version.table not in FACTS:
        return False
    for _, source_column, kind in FACTS[version.table][1]:
        value = version.row.get(source_column)
        if value is None or (kind == "date" and _valid_date(value) is None):
            return True
    quantity = version.row.get("item_quantity")
    return quantity is not None and not -SMALLINT_MAX - 1 <= quantity <= SMALLINT_MAX


def source_values(version):
    """The values of a fact version as the warehouse should hold them (created stamp, then columns)."""
    values = []
    for _, column, kind in FACTS[version.table][1]:
        value = version.row.get(column)
        if kind == "stamp":
            value = parse_stamp(value)
        elif kind == "date":
            value = _valid_date(value)
        values.append(value)
    return tuple(values)


def _warehouse_fact_sql(table):
    target, columns = FACTS[table]
    selected = []
    for column, _, kind in columns:
        selected.append(f"{column}_date, {column}_time" if kind == "stamp" else column)
    return f"SELECT {table}_id, last_updated_date, last_updated_time, {', '.join(selected)} FROM "  # nosec


def _warehouse_values(table, row):
    """(id, last_updated, values) of a warehouse fact row fetched with _warehouse_fact_sql."""
    row_id, day, time, *rest = row
    values, i = [], 0
    for _, _, kind in FACTS[table][1]:
        if kind == "stamp":
            values.append(dt.datetime.combine(rest[i], rest[i + 1]))
            i += 2
        else:
            values.append(rest[i])
            i += 1
    return row_id, dt.datetime.combine(day, time), tuple(values)


class Model:
    """The model of one history: the source's audit plus the snapshots taken before each run."""

    def __init__(self, source_url, strict_future=False, strict_clock=False):
        self.source_url = source_url
        self.strict_future = strict_future
        self.strict_clock = strict_clock
        self.snapshots = []
        self.ambiguous = 0
        self.held = 0

    def _now(self, previous_zone=None):
        """The source's snapshot, wall clock, zone and ceiling: UTC now plus the largest offset its zone and
        ``previous_zone`` had over the last hour (the latest stamp a session of either could have written)."""
        conn = connect_to_db(credentials=credentials_from_url(self.source_url), timezone=None)
        try:
            return conn.run(CLOCK_SQL, previous=previous_zone)[0]
        finally:
            close_db_connection(conn)

    def snapshot(self, kind):
        """Record the snapshot a run is about to see, and the source's wall clock (its zone) then."""
        previous = self.snapshots[-1].zone if self.snapshots else None
        text, wall_clock, zone, ceiling = self._now(previous)
        taken = Snapshot(text, kind, wall_clock, zone, ceiling)
        self.snapshots.append(taken)
        return taken

    def settle(self, snapshot):
        """After the run: the wall clock the run saw lies between the two readings; when the clock went
        back meanwhile (a fall-back during the run) the earlier one is what may hold versions back."""
        snapshot.wall_clock = min(snapshot.wall_clock, self._now(snapshot.zone)[1])

    def versions(self):
        rows = run_sql(self.source_url, "SELECT seq, tbl, id, op, last_updated, row_json::text, xid::text "
                                        "FROM model_audit.version ORDER BY seq")
        return [Version(*row) for row in rows]

    @staticmethod
    def state_at(versions, snapshot):
        """{(table, id): its latest version visible at ``snapshot``} (deleted rows absent)."""
        state = {}
        for version in versions:  # seq order: one row's versions are written in commit order (row locks)
            if snapshot.sees(version.xid):
                state[(version.table, version.id)] = version
        return {key: version for key, version in state.items() if version.op != "D"}

    # -- the check ------------------------------------------------------------------------------------

    def check(self, warehouse_url, complete):
        """Mismatches between the warehouse and the model (see the module docstring)."""
        conn = connect(warehouse_url)
        try:
            return self._check(lambda sql: conn.run(sql), complete)
        finally:
            conn.close()

    def _check(self, query, complete):
        versions = self.versions()
        committed = defaultdict(list)
        for version in versions:
            if version.op != "D":
                committed[version.key].append(version)
        states = [(snapshot, self.state_at(versions, snapshot)) for snapshot in self.snapshots]
        seen_any = {v.key for _, state in states for v in state.values()}
        ids_any = {key for _, state in states for key in state}
        facts = {table: [_warehouse_values(table, row) for row in query(
            _warehouse_fact_sql(table) + FACTS[table][0])] for table in FACTS}
        rejected = {(t, i, lu) for t, i, lu in query(
            "SELECT source_table, source_id, last_updated FROM etl_rejected_rows")}
        problems = self._check_facts(facts, committed, seen_any)
        problems += [f"rejected row {key} is not a committed source version" for key in rejected
                     if key not in committed]
        problems += self._check_dimension_ids(query, ids_any)
        if complete:
            done = [(snapshot, state) for snapshot, state in states if snapshot.complete]
            problems += self._check_complete(query, versions, done, states, facts, rejected)
        return problems

    @staticmethod
    def _check_facts(facts, committed, seen_any):
        problems = []
        for table, rows in facts.items():
            counts = Counter((row_id, stamp) for row_id, stamp, _ in rows)
            problems += [f"{FACTS[table][0]}: version {key} held {n} times"
                         for key, n in counts.items() if n > 1]
            for row_id, stamp, values in rows:
                key = (table, row_id, stamp)
                if key not in committed:
                    problems.append(f"{FACTS[table][0]}: {key} was never a committed source version")
                elif all(source_values(v) != values for v in committed[key]):
                    problems.append(f"{FACTS[table][0]}: {key} holds {values}, the source version had "
                                    f"{source_values(committed[key][-1])}")
                elif key not in seen_any:
                    problems.append(f"{FACTS[table][0]}: {key} was no run's snapshot's version of its row")
        return problems

    @staticmethod
    def _check_dimension_ids(query, ids_any):
        problems = []
        for dimension, (table, _, sql) in DIMENSIONS.items():
            for row in query(sql):
                if (table, row[0]) not in ids_any:
                    problems.append(f"{dimension}: id {row[0]} was never in a run's snapshot")
        return problems

    def _check_complete(self, query, versions, done, states, facts, rejected):
        if not done:
            return []
        last_snapshot, last = done[-1]
        held = {table: {(row_id, stamp): values for row_id, stamp, values in rows}
                for table, rows in facts.items()}
        problems = []
        self.held = 0
        for snapshot, state in done:
            for (table, row_id), version in state.items():
                if table not in FACTS:
                    continue
                if self._held(version, snapshot):
                    continue
                key = (row_id, version.last_updated)
                if is_bad(version):
                    if key in held[table]:
                        problems.append(f"{FACTS[table][0]}: bad version {version.key} loaded as a fact")
                    if version.key not in rejected:
                        problems.append(f"bad version {version.key} (snapshot {snapshot.text}) not in "
                                        "etl_rejected_rows")
                elif key not in held[table] and version.key not in rejected:
                    problems.append(f"{FACTS[table][0]}: version {version.key} seen by snapshot "
                                    f"{snapshot.text} ({snapshot.kind}) is neither a fact nor rejected")
        ambiguous = set() if self.strict_clock else self._ambiguous(versions, last)
        self.ambiguous = len(ambiguous)
        ambiguous |= {key for key, version in last.items() if self._held(version, last_snapshot)}
        ambiguous |= self._blocked(last, ambiguous)
        problems += self._check_current(query, last, ambiguous, versions)
        problems += self._check_dimensions(query, last, ambiguous)
        problems += self._check_deletions(query, done, states, last)
        return problems

    def _held(self, version, snapshot):
        """A version stamped at or after the source's wall clock at ``snapshot`` (with ``strict_future``: at
        or after its ceiling, the latest stamp a session of the zones in play could have written; after a
        fall-back or a zone change that puts the clock back, the rows written before it are below that):
        the pipeline holds it until the clock passes its stamp, or quarantines it as a future row. Not
        judged; counted."""
        bound = snapshot.ceiling if self.strict_future else snapshot.wall_clock
        if version.last_updated is None or version.last_updated < bound:
            return False
        self.held += 1
        return True

    @staticmethod
    def _blocked(last, unjudged):
        """Rows that reference an unjudged row the warehouse may lack (a held version's row loaded for the
        first time): a counterparty through its legal address, a staff member through the department, a
        fact through any dimension row (the load parks it until the row arrives)."""
        blocked = set(unjudged)
        for (table, row_id), version in last.items():
            for (source, other), column in REFERENCE.items():
                if source == table and (other, version.row.get(column)) in blocked:
                    blocked.add((table, row_id))
        for (table, row_id), version in last.items():
            for column, other in FACT_REFERENCES.get(table, {}).items():
                if (other, version.row.get(column)) in blocked:
                    blocked.add((table, row_id))
        return blocked - set(unjudged)

    @staticmethod
    def _ambiguous(versions, last):
        """(table, id) whose version at ``last`` has an earlier stamp than an older version of the row
        (the source's wall clock went back: a zone change or a fall-back): last_updated cannot order
        them, so the current state of such rows is not judged (counted instead)."""
        highest = {}
        ambiguous = set()
        for version in versions:
            key = (version.table, version.id)
            if version.last_updated is None:
                continue
            if key in highest and version.last_updated < highest[key] and last.get(key) is not None:
                ambiguous.add(key)
            highest[key] = max(highest.get(key, version.last_updated), version.last_updated)
        return {key for key in ambiguous if key in last and last[key].last_updated < highest[key]}

    @staticmethod
    def _check_current(query, last, ambiguous, versions):
        problems = []
        good = defaultdict(set)
        for version in versions:
            if version.table in FACTS and version.op != "D" and not is_bad(version):
                good[(version.table, version.id)].add((version.last_updated, source_values(version)))
        for table, view in CURRENT_VIEWS.items():
            shown = {row_id: (stamp, values) for row_id, stamp, values in (
                _warehouse_values(table, row) for row in query(
                    _warehouse_fact_sql(table) + view))}
            for row_id, (stamp, values) in shown.items():
                version = last.get((table, row_id))
                if version is None:
                    problems.append(f"{view}: {table} {row_id} is not in the source (deleted or never there)")
                elif (table, row_id) in ambiguous:
                    continue
                elif not is_bad(version) and \
                        (stamp, values) != (version.last_updated, source_values(version)):
                    problems.append(f"{view}: {table} {row_id} shows {stamp} {values}, the source has "
                                    f"{version.last_updated} {source_values(version)}")
                elif is_bad(version) and ((stamp, values) not in good[(table, row_id)]
                                          or stamp >= version.last_updated):
                    problems.append(f"{view}: {table} {row_id} shows {stamp} {values}: not an earlier good "
                                    "version of a row whose current version is bad")
            for (source, row_id), version in last.items():
                if source == table and row_id not in shown and not is_bad(version) \
                        and (source, row_id) not in ambiguous:
                    problems.append(f"{view}: {table} {row_id} missing "
                                    f"(source version {version.last_updated})")
        return problems

    @staticmethod
    def _dimension_row(last, table, row_id, columns):
        version = last[(table, row_id)]
        values = [row_id]
        for column in columns:
            if isinstance(column, tuple):
                other, name = column
                referenced = last.get((other, version.row[REFERENCE[(table, other)]]))
                value = referenced.row.get(name) if referenced else "<missing reference>"
                values.append("" if value is None and name == "location" else value)
            else:
                values.append(version.row.get(column))
        return tuple(values)

    def _check_dimensions(self, query, last, ambiguous):
        problems = []
        for dimension, (table, columns, sql) in DIMENSIONS.items():
            held = {row[0]: tuple(row) for row in query(sql)}
            for (source, row_id), version in last.items():
                if source != table or (source, row_id) in ambiguous:
                    continue
                referenced = [(other, version.row[REFERENCE[(table, other)]]) for other in
                              {c[0] for c in columns if isinstance(c, tuple)}]
                if any(ref in ambiguous for ref in referenced):
                    continue
                expected = self._dimension_row(last, table, row_id, columns)
                if held.get(row_id) != expected:
                    problems.append(f"{dimension}: {row_id} is {held.get(row_id)}, the source has {expected}")
        return problems

    @staticmethod
    def _check_deletions(query, done, states, last):
        open_rows = query("SELECT source_table, source_id FROM etl_deleted_rows "
                          "WHERE reinserted_batch_id IS NULL")
        recorded = Counter((table, row_id) for table, row_id in open_rows)
        problems = [f"etl_deleted_rows: {key} open {n} times" for key, n in recorded.items() if n > 1]
        required = {key for _, state in done[:-1] for key in state if key not in last}
        allowed = {key for _, state in states for key in state if key not in last}
        problems += [f"etl_deleted_rows: {key} deleted in the source, not recorded" for key in required
                     if key not in recorded]
        problems += [f"etl_deleted_rows: {key} recorded as deleted, but "
                     f"{'it is in the source' if key in last else 'no run ever saw it'}"
                     for key in recorded if key not in allowed]
        return problems


assert set(FACTS) == set(FACT_TABLES)
