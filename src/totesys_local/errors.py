"""The one base of the local runner's errors: every error ``totesys_local`` raises of its own is a LocalError
(those that are also pipeline errors keep ``utils.errors.TotesysError`` too, and a cluster error stays a
RuntimeError), so a caller can catch what the local tooling refused in one clause."""


class LocalError(Exception):
    """An error of the local runner, its emulator, the cluster, the generator or the CLI's helpers."""
