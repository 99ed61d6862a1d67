"""Schemas and allow-lists: what the source holds, what the warehouse holds, the DDL."""
