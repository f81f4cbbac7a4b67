"""How many CPU threads torch runs the model on, and how its idle threads wait.

Torch's OpenMP threads spin for a while whenever they run out of work, so that the next parallel
region starts a few microseconds sooner. On a machine that also runs anything else (a laptop with a
browser, two denoisers side by side) the spinning threads take the cores away from the threads that
have work, and a run can take ten times as long as on a quiet machine. Two settings avoid that:

* at most one thread per physical core that this process may run on (its CPU affinity, as set by
  ``taskset`` or a container's cpuset), capped at :data:`MAX_DEFAULT_THREADS`;
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

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: The default never goes above this: a big server's cores are better spent on several files at once
#: than on splitting one 512 x 512 tile ever finer.
MAX_DEFAULT_THREADS = 8
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
THREADS_VARIABLE = "OMP_NUM_THREADS"
_CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


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


def default_threads() -> int:
    """``OMP_NUM_THREADS`` where the user set it to a whole number, else :func:`available_cores` up to
    :data:`MAX_DEFAULT_THREADS`."""
    chosen = os.environ.get(THREADS_VARIABLE, "").strip()
    if chosen.isdigit() and int(chosen) >= 1:
        return int(chosen)
    return min(available_cores(), MAX_DEFAULT_THREADS)


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


def configure_threads(threads: int | None = None) -> int:
    """Run torch's operators on ``threads`` threads (default: :func:`default_threads`) and, when torch
    is not imported yet, with passive waiting. Returns the thread count set. Call it before the first
    model runs; it applies to the whole process."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")
    use_passive_waiting()
    import torch

    torch.set_num_threads(threads)
    log.debug("torch uses %d thread(s), wait policy %s", threads, os.environ.get(WAIT_POLICY_VARIABLE, "default"))
    return threads
