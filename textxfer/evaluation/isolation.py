"""Run one piece of work (a study cell) in a fresh spawned process, and turn its death into one line.

A child the operating system kills — the out-of-memory killer's SIGKILL on a run that outgrew the machine —
used to end the whole study in a ``BrokenProcessPool`` traceback. :func:`in_child_process` instead raises
:class:`ChildKilled`, which carries the child's exit signal and the peak memory it was seen to reach
(watched from outside while it runs, since a killed process reports nothing itself).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from textxfer.errors import TextxferError

WATCH_SECONDS = 0.2  # how often the child's peak memory is read


class ChildKilled(TextxferError):
    """The child process died without finishing (killed by a signal, or exited abruptly)."""

    def __init__(self, exit_code: int | None, peak_mib: float | None) -> None:
        self.exit_code, self.peak_mib = exit_code, peak_mib
        super().__init__(f"the child process was {self.how}")

    @property
    def how(self) -> str:
        """``killed by SIGKILL (…)``, ``exited with code N`` or ``lost``, with the peak memory seen."""
        code = self.exit_code
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            what = f"killed by {name}" + (" (what the operating system's out-of-memory killer sends)"
                                          if -code == signal.SIGKILL else "")
        elif code is not None:
            what = f"ended abruptly with exit code {code}"
        else:
            what = "lost"
        peak = f" at a peak of {self.peak_mib / 1024:.1f} GB resident" if self.peak_mib else ""
        return what + peak


def _resident_peak_mib(pid: int) -> float | None:
    """The process's peak resident memory so far (Linux: ``VmHWM``; elsewhere its current RSS), or None."""
    status = Path(f"/proc/{pid}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - gone, or no permission: nothing to report
        return None


class _PeakWatch:
    """Reads the peak memory of a pool's worker processes every :data:`WATCH_SECONDS` until stopped."""

    def __init__(self, pool) -> None:
        self.pool, self.peak_mib = pool, None
        self._seen: dict[int, object] = {}  # pid → process: the executor forgets a broken pool's workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _workers(self) -> list:
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):  # the executor's worker table
            self._seen.setdefault(process.pid, process)
        return list(self._seen.values())

    def _run(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            for process in self._workers():
                seen = _resident_peak_mib(process.pid) if process.pid else None
                if seen is not None:
                    self.peak_mib = max(self.peak_mib or 0.0, seen)

    def stop(self) -> None:
        self._workers()
        self._stop.set()
        self._thread.join()

    def exit_code(self) -> int | None:
        """The first non-zero exit code of the workers seen (call after the pool has shut down)."""
        return next((p.exitcode for p in self._seen.values() if p.exitcode not in (None, 0)), None)


def in_child_process(function, *arguments) -> None:
    """Call ``function(*arguments)`` in a fresh spawned Python process and wait. Its exceptions are re-raised
    here; if the process dies instead (killed by the operating system), :class:`ChildKilled` is raised."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    watch = None
    try:
        future = pool.submit(function, *arguments)
        watch = _PeakWatch(pool)
        future.result()
    except BrokenProcessPool:
        watch.stop()
        pool.shutdown(wait=True)  # the executor reaps its dead worker: its exit code is known after this
        raise ChildKilled(watch.exit_code(), watch.peak_mib) from None
    finally:
        if watch is not None:
            watch.stop()
        pool.shutdown(wait=True)
