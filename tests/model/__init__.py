"""The model-based random test of the whole pipeline (issue 21): histories, the model, the runs."""
