"""The local emulator: one long-lived process per state folder that keeps moto, the handlers and the
deployed state machine warm, so `totesys run` / `totesys retry` start in a fraction of a second.

- ``protocol``: where the socket is, the code fingerprint, the messages (standard library only).
- ``client``: what `totesys run|retry` does (standard library only): connect, or start the emulator;
  send argv, cwd and environment; print the output as it arrives; exit with the run's status.
- ``server``: the emulator itself, serving one request at a time; ``python -m totesys_local.daemon``.

``TOTESYS_DAEMON=off`` runs in-process instead, exactly as before. docs/DESIGN.md, "The local
emulator", has the protocol, the stale-code rule and the failure behaviour.
"""
