"""The rollup section of `verify`: the dashboard's rollups (``utils.load.rollups``) against the aggregates of
the current views, in the warehouse's own verify transaction (the rollups are small: one grouped read per
rollup). A difference is a mismatch like any other: the load keeps the rollups in each batch's transaction,
so they are never legitimately behind; the repair is ``rebuild_rollups`` (or ``totesys rebuild``)."""
from dataclasses import dataclass, field
from typing import Any, Dict, List

from pg8000.native import Connection

from utils.load.rollups import compare_rollups

TABLE = "rollups"


@dataclass
class RollupReport:
    """The rollups compared: ``mismatches`` counts the differing rollup keys over every rollup, ``keys``
    names up to ``limit`` of them as {"rollup": table, column: value, ...}, ``rollups`` the tables that
    differ."""
    mismatches: int = 0
    rollups: List[str] = field(default_factory=list)
    keys: List[Dict[str, Any]] = field(default_factory=list)
    table: str = TABLE

    @property
    def matched(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> Dict[str, Any]:
        return {"table": self.table, "matched": self.matched, "mismatches": self.mismatches,
                "rollups": self.rollups, "keys": self.keys}


def check_rollups(warehouse: Connection, limit: int) -> RollupReport:
    """Compare the warehouse's rollups with the current views (``compare_rollups``) and return the report,
    naming up to ``limit`` differing keys."""
    report = RollupReport()
    for difference in compare_rollups(warehouse):
        report.mismatches += difference["differing_keys"]
        report.rollups.append(difference["rollup"])
        report.keys += [{"rollup": difference["rollup"], **key} for key in difference["keys"]]
    report.keys = report.keys[:limit]
    return report
