"""The dashboard's rollups: small aggregates of the current state, kept by the load in each batch's own
transaction, so they are exactly as current as the facts (DDL: ``utils/catalog/sql/rollups.sql``).

Each rollup sums, per key, a few measures of the rows of one ``current_*`` view (the version loaded last
of each order or payment whose deletion is not open: greatest ``etl_load_order``, then last_updated). A
batch changes the current row of an id when it appends a version of it, re-marks a version already held
as current (``utils.load.merge._remark_held``), records its deletion or closes its deletion (a
re-insert); a batch that renames a design moves its current orders to the new name in
``rollup_sales_by_design``. ``update_rollups`` (called by the load just before the ledger row) finds
those ids, the "touched" ones: fact rows with a record id above the state's ``last_record_id`` (loads
are serialised by the advisory lock, so the serial ids of a batch are above every earlier batch's), the
ids the batch re-marked, and the deletions recorded or closed by this batch. For them it subtracts their
current row as it was before the batch (versions up to ``last_record_id`` with a load order below the
batch's: a re-marked version was not current before) and adds their current row now, grouped per rollup
key, as upserts; groups left with no row are removed.

Cost proportional to the batch, not the warehouse: the state also keeps ``max_id``, the highest natural id
among the records it covers. A batch's row whose id is above it is a new order or payment (nothing held
to subtract, no deletion of it can be open from before): those rows are read once in the batch's record
range and added, with no probe per id; only ids up to ``max_id`` (updates, re-inserts, deletions) pay
the index probes of the "before" and "now" rows. The delta carries only the columns the rollups read
(``FactSource.columns``), and the statements run with a larger ``work_mem`` (``ROLLUP_WORK_MEM``, for
this transaction only) so that a backfill batch's sort and grouping stay in memory.

A warehouse without the rollups (or with an older definition) gets them created and filled from the
current views by the first load that sees it (a load whose role may not create tables loads its batch
without them and logs a WARNING) (``rebuild_rollups``, also the call for a rebuild or resync
that rewrites facts outside a load). ``compare_rollups`` recomputes every rollup from the current views
and lists the differences (``totesys verify``).
"""
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import pg8000.exceptions
import pyarrow as pa
from pg8000.native import Connection, identifier

from utils.catalog.warehouse import WAREHOUSE_DDL
from utils.db.connection import sqlstate
from utils.db.inline import run_inline
from utils.load.schema import ADVISORY_LOCK_KEY, DELETED
from utils.logger import get_logger

ROLLUP_DDL = WAREHOUSE_DDL.with_name("rollups.sql")
STATE = "etl_rollup_state"
DESIGN_NAMES = "rollup_design_name"
# Bump when a rollup's keys or measures change: warehouses holding another definition are rebuilt.
# 2: etl_rollup_state.max_id (new ids cost no probe); rollup tables with fillfactor 70 (HOT updates).
# 3: and current rows chosen by load order (docs/RELIABILITY.md defect 3).
DEFINITION = 3
# work_mem of the load's transaction from the rollups' statements on (SET LOCAL: the COMMIT ends it): a
# backfill batch's delta (a million narrow rows) is sorted and grouped in memory, not in temporary files.
ROLLUP_WORK_MEM = "256MB"
INSUFFICIENT_PRIVILEGE = "42501"
# A batch bringing at most this many rows of a fact labels its delta rows by index probes, not a join.
PROBE_BATCH_ROWS = 5000
# Rows of each differing rollup that compare_rollups reports as examples.
EXAMPLES = 5
# Distinct keys of differing rows that compare_rollups names per rollup (verify shows up to 10 in all).
KEY_EXAMPLES = 10

logger = get_logger("load")


@dataclass(frozen=True)
class FactSource:
    """A fact table as the rollups see it: its current-state view, the source table its deletions are
    recorded under, its natural id, its serial record id, the columns its rollups' keys and measures read
    (the label's key included), and the label column its delta rows carry (``(column, table naming it
    before the batch, table naming it now, key)``, or None)."""
    fact: str
    view: str
    source: str
    id_column: str
    record_column: str
    columns: Tuple[str, ...]
    label: Optional[Tuple[str, str, str, str]] = None


class RollupMark(NamedTuple):
    """One fact's row of etl_rollup_state: the highest record id and natural id the rollups cover, and
    the definition they were built with (max_id is None in a state of definition 1)."""
    last_record_id: int
    definition: int
    max_id: Optional[int]


@dataclass(frozen=True)
class Rollup:
    """One rollup table: ``keys`` and ``measures`` are (rollup column, SQL expression over a current row
    of ``fact``, label column included); each measure is the sum of its expression; the first measure,
    the sum of 1, counts the rows (a group whose count falls to 0 is removed)."""
    table: str
    fact: str
    keys: Tuple[Tuple[str, str], ...]
    measures: Tuple[Tuple[str, str], ...]


FACT_SOURCES = {
    "fact_sales_order": FactSource("fact_sales_order", "current_sales_order", "sales_order", "sales_order_id",
                                   "sales_record_id",
                                   ("created_date", "currency_id", "agreed_delivery_location_id",
                                    "sales_staff_id", "design_id", "units_sold", "unit_price"),
                                   ("design_name", DESIGN_NAMES, "dim_design", "design_id")),
    "fact_purchase_order": FactSource("fact_purchase_order", "current_purchase_order", "purchase_order",
                                      "purchase_order_id", "purchase_record_id",
                                      ("created_date", "currency_id", "item_quantity", "item_unit_price")),
    "fact_payment": FactSource("fact_payment", "current_payment", "payment", "payment_id",
                               "payment_record_id",
                               ("created_date", "currency_id", "payment_type_id", "paid", "payment_amount")),
}
_DAY_CURRENCY = (("created_date", "created_date"), ("currency_id", "currency_id"))
_SALES = (("orders", "1"), ("sales_value", "units_sold * unit_price"))
ROLLUPS = (
    Rollup("rollup_sales_daily", "fact_sales_order", _DAY_CURRENCY,
           (("orders", "1"), ("units", "units_sold"), ("sales_value", "units_sold * unit_price"))),
    Rollup("rollup_sales_by_location", "fact_sales_order",
           _DAY_CURRENCY + (("location_id", "agreed_delivery_location_id"),), _SALES),
    Rollup("rollup_sales_by_staff", "fact_sales_order", _DAY_CURRENCY + (("staff_id", "sales_staff_id"),),
           _SALES),
    Rollup("rollup_sales_by_design", "fact_sales_order", _DAY_CURRENCY + (("design_name", "design_name"),),
           (("orders", "1"), ("units", "units_sold"), ("sales_value", "units_sold * unit_price"))),
    Rollup("rollup_purchase_daily", "fact_purchase_order", _DAY_CURRENCY,
           (("orders", "1"), ("purchase_value", "item_quantity * item_unit_price"))),
    Rollup("rollup_payment_daily", "fact_payment",
           _DAY_CURRENCY + (("payment_type_id", "payment_type_id"), ("paid", "paid")),
           (("payments", "1"), ("amount", "payment_amount"))),
)
ROLLUP_TABLES = tuple(rollup.table for rollup in ROLLUPS) + (DESIGN_NAMES, STATE)


def rollup_statements() -> List[str]:
    """The statements of the rollup DDL file, in order."""
    text = ROLLUP_DDL.read_text()
    statements = [statement.strip() for statement in text.split(";\n")]
    return [s for s in statements if any(line.strip() and not line.strip().startswith("--")
                                         for line in s.splitlines())]


# -- reading the state --------------------------------------------------------------------------------

def rollup_state(conn: Connection) -> Optional[Dict[str, RollupMark]]:
    """{fact table: RollupMark} of the warehouse's rollups; None when it has none. Reads a state of any
    definition (one without max_id too: read through to_jsonb, it is None there)."""
    if conn.run("SELECT to_regclass(:name) IS NULL", name=STATE)[0][0]:
        return None
    return _read_state(conn)


def _read_state(conn: Connection) -> Dict[str, RollupMark]:
    """etl_rollup_state's rows (the table exists) as {fact table: RollupMark}."""
    return {fact: RollupMark(mark, definition, max_id) for fact, mark, definition, max_id in conn.run(
        "SELECT fact_table, last_record_id, definition, (to_jsonb(s) ->> 'max_id')::bigint "  # nosec B608
        f"FROM {identifier(STATE)} s")}


def rollups_current(state: Optional[Mapping[str, RollupMark]]) -> bool:
    """True when ``state`` (rollup_state's answer) covers every fact with this code's definition."""
    return state is not None and set(state) == set(FACT_SOURCES) \
        and all(mark.definition == DEFINITION for mark in state.values())


# -- the load's hook ----------------------------------------------------------------------------------

def update_rollups(conn: Connection, batch_id: str, tables: Mapping[str, pa.Table], load_order: int,
                   remarked: Optional[Mapping[str, Sequence[int]]] = None,
                   distinct: Collection[str] = ()) -> List[str]:
    """Bring the rollups up to date with what this batch did, inside the batch's transaction (after its
    facts, dimensions and deletions are written, before COMMIT). ``tables``: the batch's {warehouse
    table: pyarrow Table} (its dim_design rows say which designs may have been renamed); ``load_order``:
    the batch's; ``remarked``: {fact table: ids whose held version the batch made current again};
    ``distinct``: the fact tables whose rows the batch appended hold each id at most once
    (``utils.load.merge.ids_distinct``): their new rows are read without sorting them (``_new_rows``).
    Creates and fills the rollups when the warehouse has none or another definition. Returns the facts
    updated.

    Cost: one small query for what changed, one for the state, then one statement for the facts that
    changed, which also files the batch's design names (one more small query when the batch brings
    designs, and one in the rare batch that empties a rollup group); a fact the batch did not change
    costs nothing more. Each is one round trip (``run_inline``). The statement reads the batch's record
    range once per fact; index probes only for ids up to max_id."""
    present, newest, deleted_from = _batch_changes(conn, batch_id)
    state = _read_state(conn) if present else None
    if state is None or not rollups_current(state):
        return list(FACT_SOURCES) if _create_rollups(conn, batch_id) else []
    remarked = remarked or {}
    changed = {fact for fact, source in FACT_SOURCES.items()
               if newest[fact] > state[fact].last_record_id or source.source in deleted_from} | set(remarked)
    design_ids = _batch_ids(tables.get("dim_design"), "design_id")
    renamed = _renamed_designs(conn, design_ids)
    updated = [fact for fact, source in FACT_SOURCES.items()
               if fact in changed or (source.label and renamed)]
    names = {"design_ids": design_ids}
    if updated:
        ctes, params = [], {"batch_id": batch_id, "load_order": load_order, "renamed": renamed, **names}
        for fact in updated:
            source, mark, batch = FACT_SOURCES[fact], state[fact], tables.get(fact)
            ctes.append(_fact_ctes(source, renamed if source.label else [], bool(remarked.get(fact)),
                                   probe=batch is None or batch.num_rows <= PROBE_BATCH_ROWS,
                                   distinct=fact in distinct))
            params.update({f"{source.source}_{name}": value for name, value in (
                ("mark", mark.last_record_id), ("max_id", mark.max_id), ("source", source.source),
                ("fact", fact), ("remarked", remarked.get(fact)))})
        if design_ids:  # one snapshot: the other CTEs still see the names the rollups filed rows under
            ctes.append(f"design_names AS ({_record_design_names_sql()})")
        emptied = run_inline(conn, _update_sql(ctes, [FACT_SOURCES[fact] for fact in updated]), params)
        if emptied:
            _remove_empty_groups(conn, emptied)
    elif design_ids:
        run_inline(conn, _record_design_names_sql(), names)
    return updated


def _create_rollups(conn: Connection, batch_id: str) -> bool:
    """Create and fill the rollups (``rebuild_rollups``); True when done. A load whose role may not
    create tables still loads its batch: the creation is rolled back to a savepoint, a WARNING says why
    (the dashboard says the rollups are missing) and the next load tries again. Any other error raises."""
    conn.run("SAVEPOINT rollups_created")
    try:
        rebuild_rollups(conn, batch_id)
    except pg8000.exceptions.DatabaseError as err:
        if sqlstate(err)[0] != INSUFFICIENT_PRIVILEGE:
            raise
        conn.run("ROLLBACK TO SAVEPOINT rollups_created")
        logger.warning("dashboard rollups not created: the load's role may not create them; the batch "
                       "loads without them (create them as the warehouse's owner, or grant CREATE)",
                       batch_id=batch_id, error=sqlstate(err)[1].get("M", ""))
        return False
    conn.run("RELEASE SAVEPOINT rollups_created")
    return True


def _batch_changes(conn: Connection, batch_id: str) -> Tuple[bool, Dict[str, int], Set[str]]:
    """What the batch may have changed, in one round trip: (whether etl_rollup_state exists, {fact
    table: its highest record id, 0 when empty}, the source tables whose deletions the batch recorded
    or closed). Also switches JIT off for the rest of the transaction (the rollups' statements are
    index probes, and compiling them cost more than running them, ~150 ms a statement), sets
    ROLLUP_WORK_MEM, and leaves merge joins out (a fact table that just grew has statistics saying its
    new rows are few, and the planner then sorted all of a backfill's batch by design to merge it with
    dim_design: ~0.3 s per 500k rows against a hash; ``rebuild_rollups`` allows them again)."""
    newest = ", ".join(f"(SELECT max({identifier(source.record_column)}) "
                       f"FROM {identifier(fact)})" for fact, source in FACT_SOURCES.items())  # nosec B608
    changes = f"SELECT DISTINCT source_table::text FROM {identifier(DELETED)} " \
              "WHERE batch_id = :batch_id OR reinserted_batch_id = :batch_id"  # nosec B608
    row = run_inline(conn, f"SELECT to_regclass(:state) IS NOT NULL, {newest}, "  # nosec B608
                     f"ARRAY({changes}), set_config('jit', 'off', true), "
                     "set_config('enable_mergejoin', 'off', true), set_config('work_mem', :work_mem, true)",
                     {"state": STATE, "batch_id": batch_id, "work_mem": ROLLUP_WORK_MEM})[0][:-3]
    present, highest, sources = row[0], row[1:-1], row[-1]
    return (bool(present), {fact: value or 0 for fact, value in zip(FACT_SOURCES, highest)},
            set(sources or ()))


def _batch_ids(table: Optional[pa.Table], column: str) -> List[int]:
    if table is None or not table.num_rows:
        return []
    return sorted(set(table[column].to_pylist()))


def _columns(source: FactSource, alias: str) -> str:
    """``alias.column, ...`` of the columns the rollups read from ``source``'s rows."""
    return ", ".join(f"{alias}.{identifier(column)}" for column in source.columns)


def _current_rows(source: FactSource, before: bool) -> str:
    """SELECT of the current row of each id in ``<p>_held`` (``_fact_ctes``): now, or (``before``) as it
    was before the batch (versions up to :<p>_mark with a load order below the batch's :load_order, so a
    version the batch re-marked, which was not current, is left out; deletions recorded by an earlier
    batch and open until this one). Per id, the current version is the one of greatest (load order,
    last_updated) ((id, last_updated) is unique, so no tie is left for the view's record-id tie-break):
    an index probe on the version index's id per touched id (its few versions sorted), whatever the fact
    table's size or statistics."""
    fact, id_column, p = identifier(source.fact), identifier(source.id_column), source.source
    if before:
        is_open = "d.batch_id <> :batch_id " \
                  "AND (d.reinserted_batch_id IS NULL OR d.reinserted_batch_id = :batch_id)"
        versions = f"AND f.{identifier(source.record_column)} <= :{p}_mark " \
                   "AND f.etl_load_order < :load_order "
    else:
        is_open, versions = "d.reinserted_batch_id IS NULL", ""
    return (f"SELECT v.* FROM {p}_held t CROSS JOIN LATERAL (SELECT {_columns(source, 'f')} "  # nosec B608
            f"FROM {fact} f "
            f"WHERE f.{id_column} = t.id {versions}"
            "ORDER BY f.etl_load_order DESC, f.last_updated_date DESC, f.last_updated_time DESC LIMIT 1) v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {identifier(DELETED)} d WHERE d.source_table = :{p}_source "
            f"AND d.source_id = t.id AND {is_open})")


def _labelled(source: FactSource, rows: str, sign: int, label_table: Optional[str],
              probe: bool = False) -> str:
    """``sign``, the columns of ``rows`` (a SELECT of fact rows) and the label from ``label_table`` (by
    one index probe per row with ``probe``, else joined); a missing label is NULL, which the rollups'
    NOT NULL key refuses (loud, never silently left out)."""
    if not source.label or label_table is None:
        return f"SELECT {sign} AS sign, c.* FROM ({rows}) c"  # nosec B608
    column, _, _, key = (identifier(name) for name in source.label)
    if probe:
        return (f"SELECT {sign} AS sign, c.*, (SELECT m.{column} "  # nosec B608
                f"FROM {identifier(label_table)} m WHERE m.{key} = c.{key}) AS {column} FROM ({rows}) c")
    return (f"SELECT {sign} AS sign, c.*, m.{column} FROM ({rows}) c "  # nosec B608
            f"LEFT JOIN {identifier(label_table)} m ON m.{key} = c.{key}")


def _renamed_rows(source: FactSource) -> str:
    """SELECT of the current rows of the designs in :renamed whose id the batch did not touch (the latest
    version of its id, no open deletion), as the view defines them. An id above :max_id is new in this
    batch: ``_new_rows`` adds it under the new name already."""
    fact, id_column, p = identifier(source.fact), identifier(source.id_column), source.source
    record = identifier(source.record_column)
    order = f"(n.etl_load_order, n.last_updated_date, n.last_updated_time, n.{record}) > " \
            f"(f.etl_load_order, f.last_updated_date, f.last_updated_time, f.{record})"
    return (f"SELECT {_columns(source, 'f')} FROM {fact} f "  # nosec B608
            f"WHERE f.design_id = ANY(CAST(:renamed AS integer[])) AND f.{id_column} <= :{p}_max_id "
            f"AND NOT EXISTS (SELECT 1 FROM {p}_touched t WHERE t.id = f.{id_column}) "
            f"AND NOT EXISTS (SELECT 1 FROM {fact} n WHERE n.{id_column} = f.{id_column} AND {order}) "
            f"AND NOT EXISTS (SELECT 1 FROM {identifier(DELETED)} d WHERE d.source_table = :{p}_source "
            f"AND d.source_id = f.{id_column} AND d.reinserted_batch_id IS NULL)")


def _new_rows(source: FactSource, distinct: bool = False) -> str:
    """SELECT of the current row of each id new to the rollups (no version up to :mark: nothing to
    subtract): every id of the batch above :max_id (no probe: no version of it can be held), and the
    touched ids up to :max_id that turned out not held (gaps in the ids). Its row is the latest of the
    batch's versions, unless its deletion is open now. One range read of the batch's rows (the record
    id's primary key), the touched ones as a hashed list, sorted once: a first load's or a backfill's
    batches bring mostly new ids. ``distinct``: the batch appended one row per id, its latest; no sort."""
    fact, id_column, p = identifier(source.fact), identifier(source.id_column), source.source
    record = identifier(source.record_column)
    latest = "" if distinct else f"DISTINCT ON (f.{id_column}) "
    order = "" if distinct else (f" ORDER BY f.{id_column}, f.etl_load_order DESC, f.last_updated_date DESC, "
                                 f"f.last_updated_time DESC, f.{record} DESC")
    return (f"SELECT {_columns(source, 'v')} FROM (SELECT {latest}"  # nosec B608
            f"f.{id_column}, {_columns(source, 'f')} FROM {fact} f WHERE f.{record} > :{p}_mark "
            f"AND (f.{id_column} > :{p}_max_id "
            f"OR f.{id_column} IN (SELECT id FROM {p}_touched WHERE NOT held)){order}) v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {identifier(DELETED)} d WHERE d.source_table = :{p}_source "
            f"AND d.source_id = v.{id_column} AND d.reinserted_batch_id IS NULL)")


def _fact_ctes(source: FactSource, renamed: Sequence[int], remarked: bool = False,
               probe: bool = False, distinct: bool = False) -> str:
    """The CTEs bringing ``source``'s rollups and its state row up to date, each named after its source
    table ``<p>`` (several facts share one statement) and reading its parameters ``:<p>_mark``,
    ``:<p>_max_id``, ``:<p>_source``, ``:<p>_fact``, ``:<p>_remarked`` (and the shared ``:batch_id``,
    ``:load_order``, ``:renamed``): ``<p>_touched`` (ids up to max_id with a record above mark,
    re-marked by the batch (``remarked``; a re-marked id is held, so up to max_id) or with a deletion
    recorded or closed by :batch_id, each with ``held``: the warehouse held a version of it before the
    batch), ``<p>_held`` (those ids), ``<p>_delta`` (-1 x each held id's current row before the batch,
    labelled as the rollups filed it; +1 x its current row now, labelled as dim_design names it; +1 x
    the current row of each new id, above max_id or not held (``_new_rows``); with ``renamed``, the move
    of the renamed designs' other current orders from the old name to the new), then each rollup's
    upsert (``_rollup_ctes``) and ``<p>_marked``, the state's UPDATE. An id above max_id has no version
    up to mark, so no deletion of it was open before the batch: it is never touched. A touched id with
    no version at all (a deletion of a row never loaded) has no current row before or after: nothing to
    add. ``probe``: a small batch's delta rows find their label by an index probe each (a hash of every
    design costs more than the few rows: ~5 ms at x100); ``distinct``: see ``_new_rows``."""
    old_label, new_label = (source.label[1], source.label[2]) if source.label else (None, None)
    delta = [_labelled(source, _current_rows(source, True), -1, old_label, probe),
             _labelled(source, _current_rows(source, False), 1, new_label, probe),
             _labelled(source, _new_rows(source, distinct), 1, new_label, probe)]
    if renamed:
        delta += [_labelled(source, _renamed_rows(source), -1, old_label),
                  _labelled(source, _renamed_rows(source), 1, new_label)]
    record, id_column, p = identifier(source.record_column), identifier(source.id_column), source.source
    touched = (f"SELECT {id_column} AS id FROM {identifier(source.fact)} "  # nosec B608
               f"WHERE {record} > :{p}_mark AND {id_column} <= :{p}_max_id UNION SELECT source_id "
               f"FROM {identifier(DELETED)} WHERE source_table = :{p}_source AND source_id <= :{p}_max_id "
               "AND (batch_id = :batch_id OR reinserted_batch_id = :batch_id)")
    if remarked:
        touched += f" UNION SELECT unnest(CAST(:{p}_remarked AS integer[]))"
    # A scalar subquery with LIMIT is an index probe per touched id: unlike EXISTS or a join, the
    # planner cannot answer it by hashing the whole history (seconds at x100, for a batch of any size).
    fact = identifier(source.fact)
    touched = (f"SELECT u.id, (SELECT true FROM {fact} o WHERE o.{id_column} = u.id "  # nosec B608
               f"AND o.{record} <= :{p}_mark LIMIT 1) IS NOT NULL AS held FROM ({touched}) u")
    return (f"{p}_touched AS MATERIALIZED ({touched}), "  # nosec B608
            f"{p}_held AS (SELECT id FROM {p}_touched WHERE held), "
            f"{p}_delta AS ({' UNION ALL '.join(delta)}), "
            f"{_rollup_ctes(source)}, "
            f"{p}_marked AS (UPDATE {identifier(STATE)} SET revision = revision + 1, batch_id = :batch_id, "
            f"last_record_id = greatest(last_record_id, (SELECT coalesce(max({record}), 0) FROM {fact})), "
            f"max_id = greatest(max_id, (SELECT coalesce(max({id_column}), 0) FROM {fact})) "
            f"WHERE fact_table = :{p}_fact)")


def _update_sql(ctes: Sequence[str], sources: Sequence[FactSource]) -> str:
    """One statement of every changed fact's CTEs (``_fact_ctes``, in ``ctes``), answering (rollup
    number in ROLLUPS, creation date) of each rollup row its upserts left with a count of 0
    (``_remove_empty_groups``). One statement, not one per fact: each costs the driver three round
    trips (parse, describe and bind, execute), which dominate a small batch's rollups on a busy host."""
    emptied = " UNION ALL ".join(_emptied_dates(source) for source in sources)
    return f"WITH {', '.join(ctes)} {emptied}"  # nosec B608


def _rollup_ctes(source: FactSource) -> str:
    """CTEs adding ``<p>_delta``'s signed rows to each rollup of ``source``'s fact (``<p>``: its source
    table): per rollup ``<p>_g<n>``, the delta grouped by its keys, and ``<p>_u<n>``, one additive
    upsert of the groups whose measures changed (insert a new key, else add the measures to its row:
    the unique key's index finds it, no separate probe). ``<p>_u<n>`` returns the creation date and
    count of each row it wrote; a row whose count fell to 0 is removed by ``_remove_empty_groups`` (a
    later statement: one statement cannot see its own upsert's result)."""
    ctes, p = [], source.source
    for number, rollup in enumerate(r for r in ROLLUPS if r.fact == source.fact):
        keys = [identifier(column) for column, _ in rollup.keys]
        measures = [identifier(column) for column, _ in rollup.measures]
        table = identifier(rollup.table)
        grouped = ", ".join([f"{expression} AS {identifier(column)}" for column, expression in rollup.keys]
                            + [f"sum(sign * ({expression})) AS {identifier(column)}"
                               for column, expression in rollup.measures])
        positions = ", ".join(str(position + 1) for position in range(len(keys)))
        # a group whose deltas cancel out (an update that moved none of its measures) writes nothing
        changed = " OR ".join(f"{measure} <> 0" for measure in measures)
        added = ", ".join(f"{measure} = r.{measure} + EXCLUDED.{measure}" for measure in measures)
        ctes += [f"{p}_g{number} AS (SELECT {grouped} FROM {p}_delta GROUP BY {positions})",  # nosec B608
                 f"{p}_u{number} AS (INSERT INTO {table} AS r ({', '.join(keys + measures)}) "  # nosec B608
                 f"SELECT * FROM {p}_g{number} WHERE {changed} ON CONFLICT ({', '.join(keys)}) "
                 f"DO UPDATE SET {added} RETURNING r.created_date, r.{measures[0]})"]
    return ", ".join(ctes)


def _emptied_dates(source: FactSource) -> str:
    """SELECT of (rollup number in ROLLUPS, creation date) of each row of ``source``'s rollups whose
    count the statement's upserts (``<p>_u<n>``) brought to 0."""
    rollups = [(index, rollup) for index, rollup in enumerate(ROLLUPS) if rollup.fact == source.fact]
    return " UNION ALL ".join(
        f"SELECT {index} AS rollup, created_date FROM {source.source}_u{number} "  # nosec B608
        f"WHERE {identifier(rollup.measures[0][0])} = 0"
        for number, (index, rollup) in enumerate(rollups))


def _remove_empty_groups(conn: Connection, emptied: Sequence[Sequence[Any]]) -> None:
    """Remove the rollup rows left with a count of 0 (``emptied``: (rollup number in ROLLUPS, creation
    date) pairs from the update statement): a group with no current row has no row."""
    for index in sorted({row[0] for row in emptied}):
        rollup = ROLLUPS[index]
        dates = sorted({row[1] for row in emptied if row[0] == index})
        conn.run(f"DELETE FROM {identifier(rollup.table)} "  # nosec B608
                 f"WHERE created_date = ANY(CAST(:dates AS date[])) "
                 f"AND {identifier(rollup.measures[0][0])} = 0", dates=dates)


def _renamed_designs(conn: Connection, design_ids: Sequence[int]) -> List[int]:
    """The ids among ``design_ids`` whose dim_design name differs from the name the rollups use."""
    if not design_ids:
        return []
    return [row[0] for row in run_inline(
        conn, f"SELECT d.design_id FROM dim_design d JOIN {identifier(DESIGN_NAMES)} m "  # nosec B608
        "USING (design_id) WHERE d.design_id = ANY(CAST(:ids AS integer[])) "
        "AND d.design_name <> m.design_name", {"ids": design_ids})]


def _record_design_names_sql() -> str:
    """The upsert filing the designs in :design_ids under their dim_design names from now on (a CTE of
    the rollups' statement, or alone when no fact changed)."""
    return (f"INSERT INTO {identifier(DESIGN_NAMES)} AS m (design_id, design_name) "  # nosec B608
            "SELECT design_id, design_name FROM dim_design "
            "WHERE design_id = ANY(CAST(:design_ids AS integer[])) "
            "ON CONFLICT (design_id) DO UPDATE SET design_name = EXCLUDED.design_name "
            "WHERE m.design_name <> EXCLUDED.design_name")


# -- rebuilding from the current views ----------------------------------------------------------------

def rebuild_rollups(conn: Connection, batch_id: Optional[str] = None) -> None:
    """Recompute every rollup from the current views and the design names from dim_design, inside the
    caller's transaction (the load's, or a rebuild's or resync's after it rewrote facts: call it before
    COMMIT). Creates the tables when missing; drops and recreates them when they hold another definition.
    Takes the loads' advisory lock (re-entrant: a load already holds it) and sets ROLLUP_WORK_MEM for the
    rest of the transaction."""
    conn.run("SELECT pg_advisory_xact_lock(:key), set_config('work_mem', :work_mem, true), "
             "set_config('enable_mergejoin', 'on', true)", key=ADVISORY_LOCK_KEY, work_mem=ROLLUP_WORK_MEM)
    state = rollup_state(conn)
    revision = 0
    if state is not None and not rollups_current(state):
        for table in ROLLUP_TABLES:
            conn.run(f"DROP TABLE IF EXISTS {identifier(table)}")
    elif state is not None:  # the revision goes on growing: the dashboard's cache sees the change
        revision = conn.run(f"SELECT coalesce(max(revision), 0) FROM {identifier(STATE)}")[0][0]  # nosec B608
    for statement in rollup_statements():
        conn.run(statement)
    for table in ROLLUP_TABLES:  # DELETE, not TRUNCATE: the dashboard's readers never wait for a rebuild
        conn.run(f"DELETE FROM {identifier(table)}")  # nosec B608
    conn.run(f"INSERT INTO {identifier(DESIGN_NAMES)} (design_id, design_name) "  # nosec B608
             "SELECT design_id, design_name FROM dim_design")
    for source in FACT_SOURCES.values():
        label_table = source.label[1] if source.label else None
        delta = _labelled(source, f"SELECT {_columns(source, 'v')} "  # nosec B608
                          f"FROM {identifier(source.view)} v", 1, label_table)
        conn.run(f"WITH {source.source}_delta AS ({delta}), {_rollup_ctes(source)} "  # nosec B608
                 f"INSERT INTO {identifier(STATE)} "
                 "(fact_table, last_record_id, max_id, definition, revision, batch_id) "
                 f"SELECT :fact, coalesce(max({identifier(source.record_column)}), 0), "
                 f"coalesce(max({identifier(source.id_column)}), 0), :definition, "
                 f":revision, :batch_id FROM {identifier(source.fact)}",
                 fact=source.fact, definition=DEFINITION, revision=revision + 1, batch_id=batch_id)
    logger.info("rollups rebuilt from the current views", batch_id=batch_id)


# -- the check ------------------------------------------------------------------------------------------

def _expected_sql(fact: str) -> Tuple[str, Dict[str, str]]:
    """(SQL of every rollup of ``fact`` as the current view gives it now, {rollup table: SELECT of its
    expected rows from CTE ``g``}): one scan of the view, grouped by one grouping set per rollup (its
    keys); ``g.gid`` (GROUPING of every key expression) tells the sets apart, so a NULL key stays a row of
    its own set."""
    source = FACT_SOURCES[fact]
    rollups = [rollup for rollup in ROLLUPS if rollup.fact == fact]
    label_table = source.label[2] if source.label else None
    rows = _labelled(source, f"SELECT * FROM {identifier(source.view)}", 1, label_table)  # nosec B608
    keys = list(dict.fromkeys(expression for rollup in rollups for _, expression in rollup.keys))
    measures = list(dict.fromkeys(expression for rollup in rollups for _, expression in rollup.measures))
    columns = ([f"{expression} AS k{number}" for number, expression in enumerate(keys)]
               + [f"sum({expression}) AS m{number}" for number, expression in enumerate(measures)])
    sets = ", ".join("(" + ", ".join(f"{expression}" for _, expression in rollup.keys) + ")"
                     for rollup in rollups)
    grouped = (f"SELECT GROUPING({', '.join(keys)}) AS gid, {', '.join(columns)} "  # nosec B608
               f"FROM ({rows}) v GROUP BY GROUPING SETS ({sets})")
    expected = {}
    for rollup in rollups:
        used = {expression for _, expression in rollup.keys}
        # GROUPING's bit is 1 for an expression the set leaves out; the first argument is the highest bit.
        gid = sum(1 << (len(keys) - 1 - number) for number, expression in enumerate(keys)
                  if expression not in used)
        picked = ([f"k{keys.index(expression)} AS {identifier(column)}" for column, expression in rollup.keys]
                  + [f"m{measures.index(expression)} AS {identifier(column)}"
                     for column, expression in rollup.measures])
        expected[rollup.table] = f"SELECT {', '.join(picked)} FROM g WHERE gid = {gid}"  # nosec B608
    return grouped, expected


def _difference(name: str, found: Sequence[Sequence[Any]], keys: Sequence[str]) -> Optional[Dict[str, Any]]:
    """{"rollup", "missing", "unexpected", "examples", "keys", "differing_keys"} of the (kind, row) pairs
    ``found`` ("missing" or "unexpected", the row as a dict), or None when there are none. ``keys``: the
    columns naming a row; "keys" lists up to KEY_EXAMPLES of the distinct keys of the differing rows (a
    row with other measures is missing and unexpected under one key), "differing_keys" counts them."""
    if not found:
        return None
    missing = [row for kind, row in found if kind == "missing"]
    unexpected = [row for kind, row in found if kind == "unexpected"]
    differing = list(dict.fromkeys(tuple((key, row[key]) for key in keys) for _, row in found))
    return {"rollup": name, "missing": len(missing), "unexpected": len(unexpected),
            "examples": {"missing": missing[:EXAMPLES], "unexpected": unexpected[:EXAMPLES]},
            "differing_keys": len(differing), "keys": [dict(key) for key in differing[:KEY_EXAMPLES]]}


def _except_both(tag: str, expected: str, actual: str) -> str:
    """(tag, kind, row) of the rows of CTE ``expected`` not in CTE ``actual`` ("missing") and the reverse
    ("unexpected"), as multisets."""
    return (f"SELECT '{tag}', 'missing', to_jsonb(e) FROM (SELECT * FROM {expected} EXCEPT ALL "  # nosec B608
            f"SELECT * FROM {actual}) e UNION ALL SELECT '{tag}', 'unexpected', to_jsonb(a) FROM "
            f"(SELECT * FROM {actual} EXCEPT ALL SELECT * FROM {expected}) a")


def _differences(conn: Connection, name: str, expected: str, actual: str,
                 keys: Sequence[str]) -> Optional[Dict[str, Any]]:
    """``_difference`` of two SELECTs of the same columns."""
    found = conn.run(f"WITH expected AS ({expected}), actual AS ({actual}) "  # nosec B608
                     + _except_both(name, "expected", "actual"))
    return _difference(name, [(kind, row) for _, kind, row in found], keys)


def _fact_differences(conn: Connection, fact: str) -> List[Dict[str, Any]]:
    """The differences of every rollup of ``fact``, from one statement (one scan of its current view)."""
    grouped, expected = _expected_sql(fact)
    rollups = [rollup for rollup in ROLLUPS if rollup.fact == fact]
    ctes = [f"g AS MATERIALIZED ({grouped})"]
    parts = []
    for number, rollup in enumerate(rollups):
        columns = ", ".join(identifier(column) for column, _ in rollup.keys + rollup.measures)
        ctes.append(f"e{number} AS ({expected[rollup.table]}), "  # nosec B608
                    f"a{number} AS (SELECT {columns} FROM {identifier(rollup.table)})")
        parts.append(_except_both(str(number), f"e{number}", f"a{number}"))
    found = conn.run(f"WITH {', '.join(ctes)} " + " UNION ALL ".join(parts))  # nosec B608
    differences = []
    for number, rollup in enumerate(rollups):
        rows = [(kind, row) for tag, kind, row in found if tag == str(number)]
        difference = _difference(rollup.table, rows, [column for column, _ in rollup.keys])
        if difference:
            differences.append(difference)
    return differences


def compare_rollups(conn: Connection) -> List[Dict[str, Any]]:
    """Recompute every rollup from the current views (and the design names from dim_design) and compare
    with the warehouse's; return the differences, one dict per rollup that differs: ``{"rollup",
    "missing": rows the rollup lacks, "unexpected": rows it should not have, "examples": {"missing":
    [...], "unexpected": [...]}, "differing_keys": distinct keys of those rows, "keys": up to
    KEY_EXAMPLES of them as {column: value}}`` (rows as dicts). An empty list: every rollup equals the
    facts. Rollups that are absent or of another definition are one difference named ``etl_rollup_state``
    (its keys: the fact tables).
    Read-only: run it in any transaction (REPEATABLE READ sees one consistent warehouse)."""
    state = rollup_state(conn)
    if not rollups_current(state):
        return [{"rollup": STATE, "missing": len(FACT_SOURCES), "unexpected": 0,
                 "examples": {"missing": [f"rollups of definition {DEFINITION} for {fact}"
                                          for fact in FACT_SOURCES], "unexpected": []},
                 "differing_keys": len(FACT_SOURCES),
                 "keys": [{"fact_table": fact} for fact in FACT_SOURCES]}]
    differences = [difference for fact in FACT_SOURCES for difference in _fact_differences(conn, fact)]
    found = _differences(conn, DESIGN_NAMES, "SELECT design_id, design_name FROM dim_design",
                         f"SELECT design_id, design_name FROM {identifier(DESIGN_NAMES)}",  # nosec B608
                         ["design_id"])
    if found:
        differences.append(found)
    return differences
