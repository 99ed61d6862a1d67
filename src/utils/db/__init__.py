"""PostgreSQL connections: the one way to open, describe and close one."""
