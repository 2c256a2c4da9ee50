"""Being a good neighbour: a host-wide CPU budget, low priorities, a memory cap, a time limit.

The CPU budget is shared by every worker of a host through lock files in the data folder:
``budget`` threads make ``budget // threads`` slots, and a worker holds one slot while it
analyzes a file. The kernel drops a dead process's locks, so a worker killed with
``kill -9`` frees its slot. Waiting for a slot blocks in the kernel: no polling.
"""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ex_app.config import Settings

log = logging.getLogger(__name__)


class FileTimeLimit(BaseException):
    """A file's analysis ran past the per-file time limit.

    Not an :class:`Exception`: decoders that turn any exception into "a damaged file" must
    not hide it (like :class:`KeyboardInterrupt`, it interrupts whatever code runs).
    """


class CpuBudget:
    """Slots of the host's analysis threads, one held per file being analyzed."""

    def __init__(self, folder: Path, budget: int, threads: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.slots = max(1, budget // threads)
        # Open for the life of the budget: a lock lives on its open file.
        self._files = [open(folder / f"slot-{i}.lock", "a+b") for i in range(self.slots)]  # noqa: SIM115

    @contextmanager
    def slot(self) -> Iterator[int]:
        """Hold a free slot (waiting for one when all are taken); yields its number."""
        for held, stream in enumerate(self._files):
            with suppress(BlockingIOError):
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
        else:  # all taken: wait for one
            held = os.getpid() % self.slots
            fcntl.flock(self._files[held], fcntl.LOCK_EX)
        try:
            yield held
        finally:
            fcntl.flock(self._files[held], fcntl.LOCK_UN)


def cpu_budget(settings: Settings) -> CpuBudget:
    """The host's budget for these settings (slots in the data folder)."""
    return CpuBudget(settings.data_dir / "cpu-slots", settings.resolved_cpu_budget, settings.inference.threads)


def lower_priorities(settings: Settings) -> None:
    """Nice the worker process, put its I/O in the idle class, cap its memory and its
    numeric libraries' threads. Called once, in a process that only works."""
    if settings.worker.nice:
        os.nice(settings.worker.nice)
    if settings.worker.idle_io:
        import psutil

        try:
            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except (AttributeError, OSError) as error:  # not Linux, or not allowed
            log.info("idle I/O priority unavailable: %s", error)
    from threadpoolctl import threadpool_limits

    threadpool_limits(settings.inference.threads)
    if settings.worker.memory_mb:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (settings.worker.memory_mb * 1024 * 1024, hard))


def lift_memory_cap() -> None:
    """Lift the soft memory cap set by :func:`lower_priorities`, so that a worker that ran
    out of memory while starting has the room to say so and exit cleanly."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`FileTimeLimit` in the block once it ran ``seconds``.

    A SIGALRM timer: it works in the main thread only (elsewhere the block is not limited),
    and takes effect when control returns to Python (FFmpeg runs have their own timeouts).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum, _frame):
        raise FileTimeLimit(f"took longer than {seconds:g} s, the per-file time limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
