"""Cancel a running statement after a deadline, from inside the backend.

``SET LOCAL statement_timeout`` does not bound a query that a function runs through SPI
(the timer is armed per client statement: measured here, a 1 s ``pg_sleep`` ran to the end
under a 200 ms setting). :func:`cancel_after` arms a POSIX per-process timer
(``timer_create(2)`` with ``SIGEV_SIGNAL``) that delivers SIGINT to this process: SIGINT is
what ``pg_cancel_backend()`` sends, and PostgreSQL's handler turns it into
``ERROR: canceling statement due to user request`` (SQLSTATE 57014) at the next interrupt
check. The caller runs the statement inside a subtransaction and catches that error. No
thread is involved, so it works while PL/Python holds the GIL inside SPI.
"""

from __future__ import annotations

import ctypes
import signal
import time
from contextlib import contextmanager
from typing import Iterator

_CLOCK_MONOTONIC = 1
_SIGEV_SIGNAL = 0


class _SigEvent(ctypes.Structure):
    # struct sigevent on Linux (64 bytes): sigval, signo, notify, then a union we leave zeroed.
    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("_pad", ctypes.c_int * 12)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


_libc = ctypes.CDLL(None, use_errno=True)


class Deadline:
    """State of one armed timer: ``fired`` tells whether SIGINT was sent."""

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self.started = time.monotonic()
        self.fired = False

    @property
    def elapsed_ms(self) -> float:
        """Milliseconds since the timer was armed."""
        return (time.monotonic() - self.started) * 1000.0


@contextmanager
def cancel_after(ms: int) -> Iterator[Deadline]:
    """Send SIGINT to this process ``ms`` milliseconds from now unless the block ends first.

    Yields a :class:`Deadline`; after the block, ``deadline.fired`` is True if the signal was
    sent (the caller must then expect, or absorb, a pending query cancel). Raises OSError if
    the timer cannot be created. ``ms`` must be > 0.
    """
    if ms <= 0:
        raise ValueError("ms must be positive")
    sev = _SigEvent()
    sev.sigev_signo = int(signal.SIGINT)
    sev.sigev_notify = _SIGEV_SIGNAL
    tid = ctypes.c_void_p()
    if _libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(sev), ctypes.byref(tid)) != 0:
        raise OSError(ctypes.get_errno(), "timer_create failed")
    spec = _ITimerSpec()
    spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ms, 1000)
    spec.it_value.tv_nsec *= 1_000_000
    deadline = Deadline(ms)
    try:
        if _libc.timer_settime(tid, 0, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timer_settime failed")
        yield deadline
    finally:
        left = _ITimerSpec()
        _libc.timer_gettime(tid, ctypes.byref(left))
        _libc.timer_delete(tid)
        deadline.fired = left.it_value.tv_sec == 0 and left.it_value.tv_nsec == 0
