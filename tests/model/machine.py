"""The random histories: a Hypothesis RuleBasedStateMachine over a real source and warehouse, through the
real state machine (``harness``), checked against the model (``oracle``) after every run.

Each history gets a copy of the audited tiny totesys, a copy of the (narrowed) warehouse, and a state
folder of its own. Rules: business activity on every table (inserts, several updates of one row,
deletes, re-inserts of a deleted id, an address change that cascades to counterparties), a late commit
(a transaction opened before a run, committed after it, its rows stamped before the run's bound), bad
values and their fixes, a source time-zone change, a daylight-saving fall-back a few seconds ahead
(a custom POSIX zone), and runs: plain, killed at a random point, with the warehouse down, two at once,
with a small MAX_BATCH_ROWS. The teardown commits what is open and runs once more: every history ends
with a successful run and a full check.

Switches (environment variables; docs/RELIABILITY.md): on unless set to 0, their defects fixed on main,
``MODEL_BACKDATED`` adds a rule inserting new rows with a last_updated days in the past and lets zone
changes put the clock forward by more than half the overlap (issue 19, defect 1); ``MODEL_FUTURE`` adds a
rule stamping a version minutes ahead of the source's clock and judges versions stamped ahead of the clock
(issue 19, defects 2 and 6); ``MODEL_CLOCK`` judges rows whose stamps went backwards (defect 3). Off unless
set to 1: ``MODEL_LOCAL_SAVE_KILLS=1`` kills runs while they save their state folder (defect 4).
``MODEL_INGEST_MODE`` (``cursor``, ``cdc`` or ``both``; unset: the process's INGEST_MODE, else cursor) is the
ingest mode of the histories' runs: with ``cdc`` each history ingests through a replication slot of its own
(created by its first run, dropped with its source database at its end), and a rule kills the ingest as it
advances the slot; with ``both`` each history draws its first mode and a rule switches modes mid-history.
"""
import os
import shutil
import sys
from collections import Counter
import tempfile
import time
import uuid
from datetime import timedelta

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from tests.model import activity, harness
from tests.model.oracle import Model
from tests.model.source import TABLES
from tests.support.db import run_sql
from totesys_local.cluster import create_database, drop_database, with_database
from utils.db.connection import close_db_connection, credentials_from_url

PICK = st.integers(min_value=0, max_value=10_000)
DIMENSIONS = tuple(t for t in TABLES if t not in ("sales_order", "purchase_order", "transaction", "payment"))
OVERLAP_SECONDS = 3600  # the pipeline's default INGEST_OVERLAP_SECONDS
ZONES = ("UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Europe/London")


# Switches on unless set to 0 (their defects are fixed on main); the others are off unless set to 1.
ON_BY_DEFAULT = ("MODEL_BACKDATED", "MODEL_FUTURE", "MODEL_CLOCK")


def switched_on(name):
    return os.environ.get(name, "1" if name in ON_BY_DEFAULT else "") not in ("", "0")


INGEST_MODES = ("cursor", "cdc")


def ingest_modes():
    """The ingest modes histories run in (MODEL_INGEST_MODE; the module docstring)."""
    value = (os.environ.get("MODEL_INGEST_MODE") or os.environ.get("INGEST_MODE") or "cursor").strip().lower()
    if value == "both":
        return INGEST_MODES
    if value not in INGEST_MODES:
        raise ValueError(f"MODEL_INGEST_MODE must be cursor, cdc or both, got {value!r}")
    return (value,)


# A history's first ingest mode, drawn when it starts (nothing drawn when only one mode is on).
FIRST_MODE = st.just(None).flatmap(lambda _: st.sampled_from(ingest_modes()))


class Stats:
    """Counts over every history this process ran (the bounded profile and the soak print them)."""

    def __init__(self):
        self.histories = self.rules = self.runs = self.kills = self.mismatches = 0
        self.failed_runs = self.ambiguous_rows = self.skipped = self.held_versions = 0
        self.per_rule = Counter()
        self.mode_histories, self.mode_runs = Counter(), Counter()  # by ingest mode (first mode, runs)
        self.kill_points = Counter()

    def line(self):
        return (f"histories {self.histories}, rules {self.rules}, runs {self.runs} "
                f"(failed as injected {self.failed_runs}), kills {self.kills}, mismatches {self.mismatches}, "
                f"not judged: clock-ambiguous rows {self.ambiguous_rows}, "
                f"versions stamped ahead of the clock "
                f"{self.held_versions}, zone changes skipped {self.skipped}; by ingest mode: "
                + ", ".join(f"{mode} {self.mode_histories[mode]} histories (first mode) "
                            f"{self.mode_runs[mode]} runs" for mode in INGEST_MODES))

    def rule_line(self):
        return (", ".join(f"{name} {n}" for name, n in sorted(self.per_rule.items()))
                + "\nkills by point: "
                + ", ".join(f"{point} {n}" for point, n in sorted(self.kill_points.items())))


STATS = Stats()


class Environment:
    """Where histories run: a server URL and the two template databases (set once per process)."""
    admin_url = None
    source_template = None
    warehouse_template = None


def set_zone(url, zone):
    """ALTER DATABASE ... SET timezone (new sessions only; the zone is checked by the server)."""
    from pg8000.native import identifier, literal
    database = credentials_from_url(url)["database"]
    run_sql(url, f"ALTER DATABASE {identifier(database)} SET timezone = {literal(zone)}")


def source_wall_clock(url):
    """The source's wall clock (``localtimestamp`` in the database's configured zone)."""
    conn = activity.writer(url)
    try:
        return conn.run("SELECT localtimestamp")[0][0]
    finally:
        close_db_connection(conn)


def fall_back_zone(url, seconds):
    """A POSIX zone (UTC-5 standard, UTC-4 daylight since January 1) whose daylight time ends ``seconds``
    from now on the database's clock (as tests/integration/ingest/test_ingest_timezones.py builds it)."""
    utc_now = run_sql(url, "SELECT now() AT TIME ZONE 'UTC'")[0][0]
    end = (utc_now + timedelta(seconds=seconds) - timedelta(hours=4)).replace(microsecond=0)
    day = end.timetuple().tm_yday
    if end.month > 2 and (end.year % 4 == 0 and (end.year % 100 or end.year % 400 == 0)):
        day -= 1  # Jn counts 1-365 and never February 29
    return f"XST5XDT,J1/0,J{day}/{end:%H:%M:%S}"


def trace(what, started):
    """MODEL_TRACE=1: one line per rule with its seconds (to see where a history's time goes)."""
    if switched_on("MODEL_TRACE"):
        print(f"    {time.monotonic() - started:6.2f} s  {what}", flush=True)


class PipelineHistory(RuleBasedStateMachine):
    """One random history of totesys and the pipeline (see the module docstring)."""

    def __init__(self):
        super().__init__()
        STATS.histories += 1
        env = Environment
        self.names = [f"m_src_{uuid.uuid4().hex[:10]}", f"m_wh_{uuid.uuid4().hex[:10]}"]
        create_database(env.admin_url, self.names[0], env.source_template)
        create_database(env.admin_url, self.names[1], env.warehouse_template)
        self.source = with_database(env.admin_url, self.names[0])
        self.warehouse = with_database(env.admin_url, self.names[1])
        self.state_dir = tempfile.mkdtemp(prefix="model-history-")
        self.model = Model(self.source, strict_future=switched_on("MODEL_FUTURE"),
                           strict_clock=switched_on("MODEL_CLOCK"))
        self.mode = ingest_modes()[0]           # the ingest mode of the next runs (first_load draws it)
        self.slot = f"m_cdc_{uuid.uuid4().hex[:10]}"  # its replication slot in CDC mode
        self.failed = False
        self.loaded = False       # a complete run happened (the first load is done)
        self.dirty = False        # the source changed since the last run started
        self.late = None          # the open late transaction's connection
        self.locked = set()       # (table, id) it holds

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _count(depth=1):
        """Count a rule (the calling function ``depth`` frames up names it)."""
        STATS.rules += 1
        STATS.per_rule[sys._getframe(depth).f_code.co_name] += 1

    def _write(self, work):
        """Run ``work(conn)`` in one committed transaction of an application session; return its note."""
        self._count(2)
        started = time.monotonic()
        conn = activity.writer(self.source)
        try:
            conn.run("BEGIN")
            note = work(conn)
            conn.run("COMMIT")
            self.dirty = self.dirty or note is not None
            trace(note, started)
            return note
        finally:
            close_db_connection(conn)

    def _check(self, complete, what):
        problems = self.model.check(self.warehouse, complete)
        STATS.ambiguous_rows += self.model.ambiguous
        STATS.held_versions += self.model.held
        if problems:
            STATS.mismatches += 1
            shown = "\n  ".join(problems[:12])
            more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
            snapshots = "; ".join(f"{s.kind} {s.text} at {s.wall_clock}" for s in self.model.snapshots)
            self._expect(False, f"after {what}: {len(problems)} mismatch(es) with the model:\n"
                                f"  {shown}{more}\n  snapshots: {snapshots}\n"
                                f"  {harness.ingest_summary(self.state_dir)}")

    def _expect(self, condition, message):
        if not condition:
            self.failed = True
            raise AssertionError(message)

    def _run(self, kind, plan=None, warehouse=None, **settings):
        self._count(2)
        STATS.runs += 1
        STATS.mode_runs[self.mode] += 1
        snapshot = self.model.snapshot(kind)
        self.dirty = False
        started = time.monotonic()
        outcome, detail = harness.run(self.source, warehouse or self.warehouse, self.state_dir, plan,
                                      **self._mode_settings(), **settings)
        self.model.settle(snapshot)
        trace(f"{kind}: {outcome}", started)
        return snapshot, outcome, detail

    def _mode_settings(self):
        """The runs' INGEST_MODE and, in CDC mode, the history's own slot."""
        return {"INGEST_MODE": self.mode, "CDC_SLOT_NAME": self.slot}

    @initialize(kill=st.one_of(st.none(), st.tuples(st.sampled_from(harness.KILL_POINTS),
                                                    st.integers(min_value=1, max_value=40))),
                mode=FIRST_MODE)
    def first_load(self, kill, mode=None):
        """The first load of the seeded source (in ``mode``, default the first of ``ingest_modes()``): a
        plain run, or one killed at a random point."""
        self.mode = mode or self.mode
        STATS.mode_histories[self.mode] += 1
        if kill is None:
            self.run()
        elif kill[0] == "local_save" and not switched_on("MODEL_LOCAL_SAVE_KILLS"):
            self.run_killed("s3_write", kill[1])  # defect 4 (docs/RELIABILITY.md): switched off
        else:
            self.run_killed(*kill)

    # -- business activity ------------------------------------------------------------------------

    @rule(table=st.sampled_from(DIMENSIONS), pick=PICK)
    def insert_dimension_row(self, table, pick):
        self._write(lambda conn: activity.insert_dimension(conn, table, pick))

    @rule(pick=PICK, purchase=st.booleans())
    def insert_order(self, pick, purchase):
        self._write(lambda conn: activity.insert_sale(conn, pick, purchase))

    @rule(table=st.sampled_from(TABLES), pick=PICK, times=st.integers(min_value=1, max_value=3))
    def update_row(self, table, pick, times):
        self._write(lambda conn: activity.update(conn, table, pick, times, self.locked))

    @rule(pick=PICK)
    def move_a_legal_address(self, pick):
        self._write(lambda conn: activity.move_address(conn, pick, self.locked))

    @rule(table=st.sampled_from(TABLES), pick=PICK)
    def delete_row(self, table, pick):
        self._write(lambda conn: activity.delete(conn, table, pick, self.locked))

    @rule(pick=PICK)
    def reinsert_deleted_id(self, pick):
        self._write(lambda conn: activity.reinsert(conn, pick))

    @rule(kind=st.sampled_from(sorted(activity.BAD_VALUES)), pick=PICK)
    def write_bad_value(self, kind, pick):
        self._write(lambda conn: activity.bad_value(conn, kind, pick, self.locked))

    @rule(pick=PICK)
    def fix_bad_values(self, pick):
        self._write(lambda conn: activity.fix_bad_values(conn, pick, self.locked))

    @precondition(lambda self: switched_on("MODEL_BACKDATED"))
    @rule(pick=PICK, days=st.integers(min_value=1, max_value=30))
    def insert_backdated_order(self, pick, days):
        self._write(lambda conn: activity.backdated_insert(conn, pick, days))

    @precondition(lambda self: switched_on("MODEL_FUTURE"))
    @rule(pick=PICK, minutes=st.integers(min_value=2, max_value=120))
    def stamp_in_the_future(self, pick, minutes):
        self._write(lambda conn: activity.future_update(conn, pick, minutes, self.locked))

    # -- a late commit ----------------------------------------------------------------------------

    def _cdc_snapshot_next(self):
        """True when the next run takes CDC's full snapshot (no slot recorded yet): creating the slot waits
        for every open transaction, the late one included, so that run would wait for a commit that comes
        only after it (docs/RELIABILITY.md, defect 10: the wait has no bound)."""
        return self.mode == "cdc" and (harness.cdc_pointer(self.state_dir) or {}).get("slot") != self.slot

    @precondition(lambda self: self.late is None and not self._cdc_snapshot_next())
    @rule(pick=PICK, table=st.sampled_from(("sales_order", "payment", "address", "staff")))
    def open_late_transaction(self, pick, table):
        """Open a transaction that inserts a sale and updates one row, stamped now, and keep it open."""
        self._count()
        conn = activity.writer(self.source)
        conn.run("BEGIN")
        activity.insert_sale(conn, pick)
        row = activity.choose(activity.ids(conn, table, self.locked), pick)
        if row is not None:
            activity.update_id(conn, table, row)
            self.locked.add((table, row))
        self.late = conn

    @precondition(lambda self: self.late is not None)
    @rule()
    def commit_late_transaction(self):
        self._count()
        self.dirty = True
        self._end_late("COMMIT")

    def _end_late(self, how):
        try:
            self.late.run(how)
        finally:
            close_db_connection(self.late)
            self.late, self.locked = None, set()

    # -- time -------------------------------------------------------------------------------------

    def _zone_allowed(self, zone):
        """False (the rule skipped, counted) when the ingest has not recorded the source's current zone
        (no state yet, or a change since its last run): a zone set and changed again between two runs is a
        documented limit (docs/DESIGN.md, "The source clock's offset moves"); or, with MODEL_BACKDATED=0,
        when changing to ``zone`` would put the source's wall clock forward by more than half the overlap
        (docs/RELIABILITY.md, defect 1)."""
        conn = activity.writer(self.source)
        try:
            shift, current = conn.run("SELECT extract(epoch FROM (now() AT TIME ZONE CAST(:z AS text)) "
                                      "- localtimestamp), current_setting('TimeZone')", z=zone)[0]
        finally:
            close_db_connection(conn)
        if harness.recorded_zone(self.state_dir) != current or (
                not switched_on("MODEL_BACKDATED") and shift > OVERLAP_SECONDS / 2):
            STATS.skipped += 1
            return False
        return True

    @rule(zone=st.sampled_from(ZONES))
    def change_source_time_zone(self, zone):
        """Change the source database's zone (new sessions take it; open ones keep theirs)."""
        self._count()
        if self._zone_allowed(zone):
            set_zone(self.source, zone)

    @rule(seconds=st.integers(min_value=1, max_value=4))
    def daylight_saving_ends_soon(self, seconds):
        """The source's zone falls back one hour ``seconds`` from now (the next rules cross it)."""
        self._count()
        zone = fall_back_zone(self.source, seconds)
        if self._zone_allowed(zone):
            set_zone(self.source, zone)

    # -- runs -------------------------------------------------------------------------------------

    @precondition(lambda self: self.dirty)  # a plain run with nothing new is a no-op: no history needs two
    @rule()
    def run(self):
        snapshot, outcome, detail = self._run("run")
        self._expect(outcome == "succeeded", f"a run with no fault injected failed: {detail}")
        snapshot.complete = not harness.more_waiting(self.state_dir)
        self.loaded = self.loaded or snapshot.complete
        self._check(snapshot.complete, "a run")

    @rule(nth=st.integers(min_value=1, max_value=16))
    def run_killed_at_a_stage_write(self, nth):
        """Ingest or transform dies before its nth object (data file, key set, manifest, state pointer)."""
        self.run_killed("s3_write", nth)

    @rule(after=st.booleans(), nth=st.integers(min_value=1, max_value=2))
    def run_killed_at_a_load_commit(self, after, nth):
        """The load dies just before (inside the transaction) or just after the nth batch's COMMIT."""
        self.run_killed("load_after_commit" if after else "load_before_commit", nth)

    @precondition(lambda self: switched_on("MODEL_LOCAL_SAVE_KILLS"))  # defect 4 in docs/RELIABILITY.md
    @rule(nth=st.integers(min_value=1, max_value=20))
    def run_killed_while_saving(self, nth):
        """The local run dies while saving the buckets to its state folder, before the nth file."""
        self.run_killed("local_save", nth)

    @precondition(lambda self: self.mode == "cdc")
    @rule(nth=st.integers(min_value=1, max_value=2))
    def run_killed_before_the_slot_advances(self, nth):
        """CDC: the ingest dies after its batch's manifest and state pointer, before the slot advances (or,
        on a run after such a death, as it catches the slot up with the state pointer)."""
        self.run_killed("slot_advance", nth)

    @precondition(lambda self: len(ingest_modes()) > 1 and (self.mode == "cdc" or self.late is None))
    @rule()
    def switch_ingest_mode(self):
        """The next runs ingest in the other mode (to CDC: a new slot and a full snapshot; to the cursor:
        its windows continue from the bounds the CDC runs kept)."""
        self._count()
        self.mode = "cursor" if self.mode == "cdc" else "cdc"
        self.dirty = True  # the next run is worth making even with nothing new

    def run_killed(self, point, nth):
        plan = harness.KillPlan(point, nth)
        _, outcome, detail = self._run(f"killed at {point} #{nth}", plan)
        if plan.fired:
            STATS.kills += 1
            STATS.kill_points[point] += 1
            STATS.failed_runs += 1
            self._expect(outcome != "succeeded" or point == "local_save",
                         f"a run killed at {point} #{nth} reported success")
        else:
            self._expect(outcome == "succeeded", f"a run with no fault reached failed: {detail}")
        self._check(False, f"a run killed at {point} #{nth}")

    @precondition(lambda self: self.dirty)  # its retries take seconds: only with something to load
    @rule()
    def run_with_the_warehouse_down(self):
        _, outcome, detail = self._run("warehouse down", warehouse=harness.dead_warehouse_url(self.warehouse))
        STATS.failed_runs += 1
        self._expect(outcome == "failed", f"a run with the warehouse down did not fail: {outcome} {detail}")
        self._check(False, "a run with the warehouse down")

    @precondition(lambda self: self.dirty)
    @rule(delay=st.sampled_from((0.0, 0.3, 1.0)))
    def two_runs_at_once(self, delay):
        self._count()
        STATS.runs += 2
        snapshot = self.model.snapshot("two at once")
        self.dirty = False
        STATS.mode_runs[self.mode] += 2
        statuses = harness.run_two_at_once(self.source, self.warehouse, self.state_dir, delay,
                                           **self._mode_settings())
        self.model.settle(snapshot)
        self._expect(statuses == ["SUCCEEDED", "SUCCEEDED"], f"two runs at once: {statuses}")
        self._check(False, "two runs at once")

    @precondition(lambda self: self.loaded and self.dirty)  # a first load in batches of a few rows: 24 rounds
    @rule(max_rows=st.integers(min_value=1, max_value=6))
    def run_with_small_batches(self, max_rows):
        snapshot, outcome, detail = self._run(f"MAX_BATCH_ROWS={max_rows}", MAX_BATCH_ROWS=max_rows)
        self._expect(outcome == "succeeded", f"a run with MAX_BATCH_ROWS={max_rows} failed: {detail}")
        snapshot.complete = not harness.more_waiting(self.state_dir)
        self._check(snapshot.complete, f"a run with MAX_BATCH_ROWS={max_rows}")

    # -- the end ----------------------------------------------------------------------------------

    def teardown(self):
        try:
            if self.late is not None:
                self._end_late("COMMIT")
            if not self.failed:
                deadline = time.monotonic() + 10
                while True:  # a fall-back in flight is left to finish first: no rule waits for it
                    snapshot, outcome, detail = self._run("final run")
                    self._expect(outcome == "succeeded", f"the final run failed: {detail}")
                    snapshot.complete = not harness.more_waiting(self.state_dir)
                    if snapshot.complete or time.monotonic() > deadline:
                        break
                self._check(snapshot.complete, "the final run")
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            for name in self.names:  # the source's slot goes with it (drop_database drops its slots)
                drop_database(Environment.admin_url, name)
