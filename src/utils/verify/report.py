"""The verify Report as text for people (`totesys verify`) or JSON for machines (`--json`)."""
import json
from typing import List

from utils.verify.rollup_check import RollupReport
from utils.verify.run import Report, TableReport

COLUMNS = (("matched", "matched"), ("missing", "missing"), ("extra", "extra"), ("differing", "differing"),
           ("in_flight", "in flight"), ("quarantined", "quarantined"))


def _row(table: TableReport) -> str:
    values = [table.matched] + [table.counts[kind] for kind, _ in COLUMNS[1:]] + [table.deletions_recorded]
    return f"  {table.table:<20}" + "".join(f"{value:>12,}" for value in values)


def render_text(report: Report) -> List[str]:
    """Lines for people: one per table, the ids of each difference, the history, the verdict."""
    header = f"  {'table':<20}" + "".join(f"{name:>12}" for _, name in COLUMNS) + f"{'deleted':>12}"
    last = report.last_loaded_batch or "none"
    lines = [f"verify: totesys against the warehouse (last loaded batch {last}, "
             f"{report.pending_batches} batch(es) not loaded yet)", header]
    lines += [_row(table) for table in report.tables]
    for table in report.tables:
        for kind, name in COLUMNS[1:]:
            if table.ids[kind]:
                lines.append(f"  {table.table} {name}: ids {', '.join(map(str, table.ids[kind]))}"
                             + (" ..." if table.counts[kind] > len(table.ids[kind]) else ""))
    for table in report.tables:
        if table.deletions_held:
            lines.append(f"  {table.table}: {table.deletions_held:,} deletion(s) of {table.source_table} "
                         "held by the mass-delete guard "
                         f"(approve: totesys deletes --approve {table.source_table})")
    for history in report.history:
        if history.matched:
            lines.append(f"  history {history.table}: {history.landed:,} versions landed, every one in the "
                         f"warehouse once (or quarantined)")
            continue
        lines.append(f"  history {history.table}: {history.not_in_warehouse_count:,} landed version(s) "
                     f"not in the warehouse {history.not_in_warehouse}; {history.not_landed_count:,} "
                     "fact version(s) "
                     f"never landed {history.not_landed}")
    lines.append(_rollup_line(report.rollups))
    if report.mismatches:
        names = sorted({t.table for t in report.tables if t.mismatches}
                       | {h.table for h in report.history if not h.matched}
                       | ({report.rollups.table} if report.rollups.mismatches else set()))
        lines.append(f"MISMATCH: {report.mismatches:,} difference(s) in {', '.join(names)} "
                     "(repair: totesys resync --tables <source table>, or totesys rebuild)")
    else:
        lines.append("every table matched")
    return lines


def _rollup_line(rollups: RollupReport) -> str:
    if rollups.matched:
        return f"  {rollups.table}: every dashboard rollup equals the current views"
    keys = "; ".join(", ".join(f"{column}={value}" for column, value in key.items()) for key in rollups.keys)
    more = " ..." if rollups.mismatches > len(rollups.keys) else ""
    return (f"  {rollups.table}: {rollups.mismatches:,} rollup key(s) differ from the current views in "
            f"{', '.join(rollups.rollups)}: {keys}{more} (repair: rebuild_rollups, or totesys rebuild)")


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), sort_keys=True, default=str)
