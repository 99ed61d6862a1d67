"""The ingest stage: totesys -> Parquet in the ingest bucket (entry point: run.run_ingest)."""
