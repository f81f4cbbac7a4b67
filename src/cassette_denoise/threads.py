"""How many CPU threads torch runs the model on, and how its idle threads wait.

Torch's OpenMP threads spin for a while whenever they run out of work, so that the next parallel
region starts a few microseconds sooner. On a machine that also runs anything else (a laptop with a
browser, two denoisers side by side) the spinning threads take the cores away from the threads that
have work, and a run can take ten times as long as on a quiet machine. Two settings avoid that:

* at most one thread per physical core that this process may run on (its CPU affinity, as set by
  ``taskset`` or a container's cpuset), capped at :data:`MAX_DEFAULT_THREADS`, and none on the cores that
  other programs keep busy: the threads of one parallel region wait for the slowest, so a thread sharing a
  core with a busy program holds the others up (the denoiser's two channels run in regions of their own, so
  for stereo it matters less; docs/speed.md has the measurements). How busy the cores are is read from
  ``/proc/stat`` while torch loads, a second that the process spends waiting anyway;
* passive waiting (``OMP_WAIT_POLICY=PASSIVE``): idle threads sleep. OpenMP reads the policy once, when
  torch is first imported, so :func:`use_passive_waiting` must run before that; the command line does it
  first thing. Outputs are identical either way; on a quiet machine passive waiting costs a few percent.

From Python::

    from cassette_denoise.threads import configure_threads
    configure_threads()            # the default below; before `import torch` also sets passive waiting
    configure_threads(threads=1)   # e.g. one thread per process when running several processes

The thread count can change the model's output in the last bit of float32 (sums split across threads
add up in another order): below one step of 16-bit audio.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The default never goes above this: a big server's cores are better spent on several files at once
#: than on splitting one 512 x 512 tile ever finer.
MAX_DEFAULT_THREADS = 8
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
THREADS_VARIABLE = "OMP_NUM_THREADS"
_CPU_TOPOLOGY = Path("/sys/devices/system/cpu")
_PROC_STAT = Path("/proc/stat")
_MIN_SAMPLE_S = 0.2  # the counters tick every 10 ms: shorter windows say little
_M_ARENA_MAX = -8  # mallopt's parameter number, glibc's malloc.h


def available_cores() -> int:
    """Physical cores among the CPUs this process may run on: hyper-threads of one core count once."""
    if not hasattr(os, "sched_getaffinity"):  # macOS, Windows: no affinity or topology to read
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in os.sched_getaffinity(0):
        topology = _CPU_TOPOLOGY / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:  # no topology (some containers): each CPU counts as a core
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def default_threads(*, busy_cores: float = 0.0) -> int:
    """``OMP_NUM_THREADS`` where the user set it to a whole number, else :func:`available_cores` up to
    :data:`MAX_DEFAULT_THREADS`, less the cores other programs keep busy (``busy_cores``, on average, see
    :func:`busy_cores_elsewhere`), but at least one."""
    chosen = os.environ.get(THREADS_VARIABLE, "").strip()
    if chosen.isdigit() and int(chosen) >= 1:
        return int(chosen)
    cores = available_cores()
    return max(1, min(cores - int(round(max(0.0, busy_cores))), MAX_DEFAULT_THREADS))


@dataclass(frozen=True)
class CpuSample:
    """What :func:`busy_cores_elsewhere` compares: when, how long the CPUs this process may use have
    been idle in all, and how much CPU time this process has used, all in seconds."""

    wall_s: float
    idle_s: float
    own_s: float


def sample_cpu() -> CpuSample | None:
    """The counters now, from ``/proc/stat``; None where there is no such file (macOS, Windows)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = {f"cpu{cpu}" for cpu in os.sched_getaffinity(0)}
    try:
        lines = _PROC_STAT.read_text().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    # Per CPU: user nice system idle iowait ...; a CPU waiting for I/O is free to compute.
    idle = sum(int(fields[4]) + int(fields[5]) for fields in map(str.split, lines) if fields and fields[0] in cpus)
    times = os.times()
    return CpuSample(time.monotonic(), idle / ticks, times.user + times.system)


def busy_cores_elsewhere(before: CpuSample | None, after: CpuSample | None) -> float:
    """How many of this process's cores other programs kept busy between two samples, on average (0 where
    either is missing or they are too close together to tell)."""
    if before is None or after is None or after.wall_s - before.wall_s < _MIN_SAMPLE_S:
        return 0.0
    wall = after.wall_s - before.wall_s
    busy = len(os.sched_getaffinity(0)) * wall - (after.idle_s - before.idle_s) - (after.own_s - before.own_s)
    return max(0.0, busy / wall)


def use_passive_waiting() -> bool:
    """Make idle OpenMP threads sleep instead of spin, unless the user chose a policy in
    ``OMP_WAIT_POLICY``. Returns whether this call set it: it cannot once torch has been imported,
    since OpenMP reads the policy when it loads."""
    if WAIT_POLICY_VARIABLE in os.environ:
        return False
    if "torch" in sys.modules:
        log.debug("torch is already imported: its OpenMP threads keep their wait policy")
        return False
    os.environ[WAIT_POLICY_VARIABLE] = "PASSIVE"
    return True


def limit_malloc_arenas(arenas: int) -> bool:
    """On glibc, let the threads share at most ``arenas`` malloc arenas (``mallopt(M_ARENA_MAX)``); returns whether
    it took. Each thread that allocates while another holds the lock gets an arena of its own, which keeps freed
    memory for itself: with the denoiser's two channel workers, 465-485 MB at the peak instead of 430-445, at the
    same speed (a 5-minute stereo file). Call it before the threads start."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_ARENA_MAX, arenas) == 1


def configure_threads(threads: int | None = None) -> int:
    """Run torch's operators on ``threads`` threads (default: :func:`default_threads`, less the cores other
    programs kept busy while torch loaded, when this call loads it) and, when torch is not imported yet, with
    passive waiting. Returns the thread count set. Call it before the first model runs; it applies to the
    whole process."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")
    use_passive_waiting()
    before = sample_cpu() if "torch" not in sys.modules else None
    import torch

    if threads is None:
        busy = busy_cores_elsewhere(before, sample_cpu())
        threads = default_threads(busy_cores=busy)
        log.debug("other programs kept %.1f core(s) busy while torch loaded", busy)
    torch.set_num_threads(threads)
    limit_malloc_arenas(max(2, threads))
    log.debug("torch uses %d thread(s), wait policy %s", threads, os.environ.get(WAIT_POLICY_VARIABLE, "default"))
    return threads
