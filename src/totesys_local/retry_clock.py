"""The state machine's retry waits, compressed in time on a laptop.

The deployed definition (state_machine/pipeline.asl.json) waits as long as an RDS failover may last: a
``DatabaseUnavailableError`` is retried after 15, 30, 60 and 120 s. The local emulation interprets that
same definition with moto's engine, which sleeps each Retry interval for real (one ``time.sleep`` in
moto's retrier). Here that sleep is replaced by a ``RetryClock``: it records each interval the
definition asked for (the *nominal* wait, what AWS would wait) and sleeps only ``scale`` times it.

``scale`` comes from ``TOTESYS_RETRY_TIME_SCALE`` (a number >= 0; default 0.01, so ``make run`` against a
warehouse that is down fails after ~2 s of waiting instead of ~4 min; the tests use 0). Nothing else in
the engine is compressed: Lambda handlers and every other state run at their real speed.
"""
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Mapping, Optional
from unittest import mock

from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

SCALE_VARIABLE = "TOTESYS_RETRY_TIME_SCALE"
DEFAULT_SCALE = 0.01


def scale_from_environment(environ: Optional[Mapping[str, str]] = None) -> float:
    """The compression factor from ``TOTESYS_RETRY_TIME_SCALE`` (DEFAULT_SCALE when unset or empty).

    Raises ValueError naming the variable for anything but a finite number >= 0."""
    text = (os.environ if environ is None else environ).get(SCALE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_SCALE
    try:
        scale = float(text)
    except ValueError:
        scale = -1.0
    if not 0 <= scale < float("inf"):
        raise ValueError(f"{SCALE_VARIABLE} must be a number >= 0 (0 = no real wait), got {text!r}")
    return scale


class RetryClock:
    """Stands in for the ``time`` module of moto's retrier: ``sleep(seconds)`` records the nominal wait
    and sleeps ``seconds * scale``. ``waits`` lists the nominal waits in the order they happened."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.waits: List[float] = []
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(float(seconds))
        if self.scale:
            time.sleep(seconds * self.scale)

    @property
    def elapsed(self) -> float:
        """Nominal seconds waited so far: how long AWS would have spent in retry waits."""
        with self._lock:
            return sum(self.waits)


@contextmanager
def compressed_retry_waits(scale: Optional[float] = None) -> Iterator[RetryClock]:
    """While inside, every Retry wait of moto's Step Functions engine goes through a new RetryClock
    (``scale`` None: from the environment). Yields the clock; contexts nest (the innermost wins)."""
    clock = RetryClock(scale_from_environment() if scale is None else scale)
    with mock.patch.object(retrier_decl, "time", clock):
        yield clock
