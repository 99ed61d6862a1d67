"""The ingest stage: totesys -> Parquet in the ingest bucket (entry point: modes.run_ingest)."""
