"""Run a batch on a Dask cluster: plan against the manifest, send one task per file, record each outcome.

Only this process writes the manifest. A few tasks per worker thread are in flight at a time (more are sent as
they finish), so ``running`` in the manifest means "sent to a worker" and an interrupted run leaves little to
put back. Dask retries a task whose worker died (``distributed.scheduler.allowed-failures`` times, 3 by default)
and then reports it as failed; a file that cannot be read or written fails at once, without retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cassette_denoise.audio import AudioError, probe, remove_stale_partials
from cassette_denoise.batch.manifest import Entry, Manifest
from cassette_denoise.batch.report import REPORT_FOLDER, warnings_for, write_report
from cassette_denoise.batch.stats import BANDS_HZ
from cassette_denoise.batch.worker import Outcome, Settings, Task, denoise_task, file_sha256

log = logging.getLogger(__name__)

LOCK_NAME = ".manifest.lock"
#: Tasks in flight per worker thread: enough that no worker waits for the next file, few enough that an
#: interrupted run has little to put back.
TASKS_PER_THREAD = 2
#: How long a run waits for a first worker (a cluster's workers may still be starting).
WORKER_WAIT_S = 120


class BatchError(Exception):
    """A batch that cannot start (another run holds the folder, no workers); the message says which."""


@dataclass(frozen=True)
class Pending:
    """A file to (re)do: its manifest row id, input, output and duration (0 when its header is unreadable)."""

    row_id: int
    source: Path
    destination: Path
    duration_s: float


@dataclass
class Plan:
    pending: list[Pending] = field(default_factory=list)
    #: Done earlier with the same input and settings.
    up_to_date: int = 0
    #: Outputs that exist but that no batch in this folder made: left alone unless ``overwrite``.
    foreign: list[Path] = field(default_factory=list)

    @property
    def audio_s(self) -> float:
        return sum(item.duration_s for item in self.pending)


class Batch:
    """One batch run into ``out_dir``: holds the folder's lock and its manifest while open."""

    def __init__(self, out_dir: str | Path, *, settings: Settings):
        self.out_dir = Path(out_dir).resolve()
        self.settings = settings
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out_dir / LOCK_NAME, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise BatchError(f"{self.out_dir}: another batch is running into this folder") from None
        self.manifest = Manifest(self.out_dir)
        restored = self.manifest.requeue_unfinished()
        if restored:
            log.info("%d file(s) an earlier run left running are queued again", restored)

    def close(self) -> None:
        self.manifest.close()
        self._lock.close()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def plan(self, jobs: list, *, overwrite: bool) -> Plan:
        """Decide for each ``(source, destination)`` job (``cli.denoise.Job``) whether it must be done, and queue
        those that must."""
        plan = Plan()
        settings_json, settings_sha = self.settings.as_json(), self.settings.sha256
        for job in jobs:
            source, destination = job.source.resolve(), job.destination.resolve()
            stat = source.stat()
            row = self.manifest.get(str(source))
            if not overwrite and row is None and destination.exists():
                plan.foreign.append(destination)
                continue
            if not overwrite and row is not None and self._up_to_date(row, destination, stat, settings_sha):
                plan.up_to_date += 1
                continue
            row_id = self.manifest.queue(Entry(str(source), str(destination), stat.st_size, stat.st_mtime_ns,
                                               settings_sha, self.settings.model_sha256, settings_json))
            # No task of this run exists yet, and the lock keeps other runs out: a temporary file next to the
            # output is a leftover of a killed writer.
            remove_stale_partials(destination)
            plan.pending.append(Pending(row_id, source, destination, _duration_s(source)))
        return plan

    def _up_to_date(self, row, destination: Path, stat: os.stat_result, settings_sha: str) -> bool:
        if row["status"] != "done" or row["settings_sha256"] != settings_sha or not destination.exists():
            return False
        if (row["size_bytes"], row["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return True
        # Touched or copied but maybe not changed: the content decides.
        if row["size_bytes"] == stat.st_size and file_sha256(row["input_path"]) == row["content_sha256"]:
            self.manifest.touch(row["input_path"], size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
            return True
        return False

    def run(self, client, plan: Plan) -> Iterator[tuple[Pending, Outcome]]:
        """Send ``plan``'s files to ``client``'s cluster; yields each file with its outcome once it is recorded.

        An interruption (KeyboardInterrupt) cancels what is in flight and puts it back to ``queued``.
        """
        from distributed import as_completed

        waiting = list(reversed(plan.pending))
        by_key: dict[str, Pending] = {}
        flow = as_completed()
        with _CtrlC() as ctrl_c:
            try:
                self._top_up(client, waiting, by_key, flow)
                while not flow.is_empty():
                    with ctrl_c.may_stop_here():
                        future = next(flow)
                    item = by_key.pop(future.key)
                    outcome = _outcome(future, item)
                    self._record(outcome)
                    yield item, outcome
                    self._top_up(client, waiting, by_key, flow)
            finally:
                if by_key:
                    client.cancel(list(flow.futures), force=True)
                    for item in by_key.values():
                        self.manifest.set_status(str(item.source), "queued")

    def _top_up(self, client, waiting: list[Pending], by_key: dict, flow) -> None:
        threads = sum(client.nthreads().values())
        if threads == 0 and by_key:
            return  # every worker is gone for now; what is in flight goes to the next one that joins
        if threads == 0:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise BatchError(f"no worker joined the cluster at {client.scheduler.address} "
                                 f"within {WORKER_WAIT_S} s") from None
            threads = sum(client.nthreads().values())
        while waiting and len(by_key) < TASKS_PER_THREAD * threads:
            item = waiting.pop()
            thumbnail = self.out_dir / REPORT_FOLDER / "thumbs" / f"{item.row_id:07d}.png"
            task = Task(str(item.source), str(item.destination), str(thumbnail), self.settings)
            # Not pure: the same task twice must run twice (the input may have changed in between).
            future = client.submit(denoise_task, task, key=f"denoise-{item.row_id}-{os.urandom(4).hex()}", pure=False)
            by_key[future.key] = item
            self.manifest.set_status(str(item.source), "running")
            flow.add(future)

    def _record(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.manifest.finish(outcome.source, status="failed", warnings=[], error=outcome.error,
                                 worker=outcome.worker)
            return
        floors = {f"{band}_floor_{when}_db": levels[band]
                  for when, levels in (("before", outcome.floors_before_db), ("after", outcome.floors_after_db))
                  for band in BANDS_HZ}
        warnings = warnings_for(clipped_samples=outcome.clipped_samples, hum_hz=outcome.hum_hz,
                                whine_hz=outcome.whine_hz, floors_before_db=outcome.floors_before_db,
                                floors_after_db=outcome.floors_after_db)
        self.manifest.finish(
            outcome.source, status="done", warnings=warnings, content_sha256=outcome.content_sha256,
            duration_s=outcome.duration_s, seconds=outcome.seconds, worker=outcome.worker, hum_hz=outcome.hum_hz,
            whine_hz=" ".join(f"{frequency:.0f}" for frequency in sorted(outcome.whine_hz)) or None,
            clipped_samples=outcome.clipped_samples, peak_dbfs=outcome.peak_dbfs, thumbnail=outcome.thumbnail,
            **floors,
        )

    def write_report(self) -> tuple[Path, Path]:
        """The report of every file in the manifest, this run's and earlier ones'."""
        return write_report(self.manifest.rows(), self.out_dir)


@contextlib.contextmanager
def connect(*, workers: int | None = None, scheduler: str | None = None) -> Iterator:
    """A Dask client: on the cluster at ``scheduler``, else on a LocalCluster of ``workers`` processes with one
    thread each (each process holds its own model; torch in each uses one core)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    if workers is None or workers < 1:
        raise BatchError(f"--workers must be at least 1, got {workers}")
    with _workers_ignore_ctrl_c():
        # Everything on the loopback interface: a local run opens no port to the network.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
    with cluster, Client(cluster) as client:
        yield client


class _CtrlC:
    """Ctrl-C stops a run only where no call to the cluster is under way.

    The client's blocking calls leave the cluster's event loop in a bad state when KeyboardInterrupt lands in them
    (it logs a traceback of its own). So, in the main thread, a first Ctrl-C is noted and raised as
    KeyboardInterrupt where :meth:`may_stop_here` says it is safe: while waiting for the next file to finish,
    which is where a run spends its time. A second Ctrl-C stops at once, wherever it lands.
    """

    def __init__(self):
        self._pressed = False
        self._waiting = False
        self._previous = None

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_signal(self, signum, frame) -> None:
        if self._waiting or self._pressed:
            raise KeyboardInterrupt
        self._pressed = True

    @contextlib.contextmanager
    def may_stop_here(self) -> Iterator[None]:
        if self._pressed:
            raise KeyboardInterrupt
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start processes that ignore SIGINT.

    Ctrl-C in a terminal reaches every process of the group. The worker processes should not die of it, each
    with a traceback: this process catches it and shuts the cluster down. An ignored signal stays ignored in a
    child (and Python then installs no handler of its own), so SIGINT is ignored while the children start; a
    Ctrl-C in that second is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _outcome(future, item: Pending) -> Outcome:
    """The task's outcome; a task that raised or whose workers kept dying becomes a failed outcome."""
    from distributed import KilledWorker

    if future.status == "finished":
        return future.result()
    error = future.exception()
    if isinstance(error, KilledWorker):
        message = f"{item.source}: its workers died while denoising it ({error})"
    else:
        message = f"{item.source}: {type(error).__name__}: {error}"
    return Outcome(str(item.source), message, worker="")


def _duration_s(path: Path) -> float:
    try:
        return probe(path).duration_s
    except AudioError:
        return 0.0  # the task reports why
