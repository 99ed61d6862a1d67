"""The load stage: processed batches -> the warehouse (entry point: run.run_load)."""
