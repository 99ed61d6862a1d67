"""The transform stage: ingest batches -> star-schema Parquet (entry point: run.run_transform)."""
