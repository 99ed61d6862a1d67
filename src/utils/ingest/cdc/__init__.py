"""Change data capture (``INGEST_MODE=cdc``): ingest reads the committed changes of the eleven tables from a
logical replication slot (plugin ``test_decoding``) through SQL functions on a normal connection, instead
of scanning every table for a ``last_updated`` window and copying every key set.

``slot`` creates, inspects, peeks, advances and drops the slot; ``decode`` parses test_decoding's lines
(strictly: a line it cannot parse fails the run with table, column and LSN); ``run`` lands one batch of
changes as the cursor mode's Parquet files, ``_deleted`` object, key sets, manifest and state pointer, and
only then advances the slot; ``fallback`` takes the consistent full snapshot of a first run, of a lost slot
and of a re-sync; ``metric`` emits the WAL the slot retains. See docs/DESIGN.md, "Change data capture".
"""
