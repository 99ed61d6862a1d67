"""Local-only tooling: PostgreSQL cluster, data generator, local runner and the totesys CLI."""
