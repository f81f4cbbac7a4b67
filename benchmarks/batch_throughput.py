"""Throughput of ``cassette-denoise batch`` on a LocalCluster of 1 and 2 worker processes.

The inputs are ``--files`` stereo 44.1 kHz PCM_16 WAVs of ``--duration-s`` seconds each (synthetic music
plus hiss, :func:`_common.input_file`, cached). For each worker count a fresh LocalCluster runs the whole
batch into a fresh output folder with the bundled model, through the same library calls as the command. The
time counted runs from the first task sent to the last outcome recorded (each worker's model loading
included; cluster start-up, planning and the report are recorded apart). It writes
``results/batch_throughput.json``: files per hour, hours of audio per hour, the workers' peak memory, and the
machine's load average at the start of each run (the machine may be shared).

    python benchmarks/batch_throughput.py                     # 8 × 60 s, 1 and 2 workers
    python benchmarks/batch_throughput.py --workers 1,2,4 --files 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from types import SimpleNamespace

import _common

RESULT = _common.RESULTS_DIR / "batch_throughput.json"
ARCHIVE_TAPES = 10_000
ARCHIVE_HOURS = 15_000


def measure(inputs: list, *, workers: int, out_dir) -> dict:
    from cassette_denoise.batch.run import Batch, connect
    from cassette_denoise.batch.worker import Settings, model_sha256
    from cassette_denoise.cli.denoise import plan_jobs
    from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB

    shutil.rmtree(out_dir, ignore_errors=True)
    settings = Settings(strength_db=DEFAULT_STRENGTH_DB, remove_hum=True, subtype=None, model_path=None,
                        model_sha256=model_sha256(None))
    jobs, errors = plan_jobs([str(path) for path in inputs], output=None, out_dir=str(out_dir))
    if errors:
        raise SystemExit(f"bad inputs: {errors}")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with Batch(out_dir, settings=settings) as batch:
        plan = batch.plan(jobs, overwrite=True)
        with connect(workers=workers) as client:
            ready = time.perf_counter()
            outcomes = [outcome for _, outcome in batch.run(client, plan)]
            finished = time.perf_counter()
            peak_rss_mb = max(client.run(_peak_rss_mb).values())
        batch.write_report()
    failed = [outcome.error for outcome in outcomes if outcome.error]
    if failed:
        raise SystemExit(f"failed: {failed}")
    seconds = finished - ready
    audio_h = plan.audio_s / 3600
    return {
        "workers": workers, "files": len(outcomes), "audio_h": round(audio_h, 4), "seconds": round(seconds, 2),
        "cluster_start_s": round(ready - started, 2), "files_per_hour": round(len(outcomes) / seconds * 3600, 1),
        "audio_hours_per_hour": round(audio_h / seconds * 3600, 2), "load_average_1min_at_start": round(load, 2),
        "worker_peak_rss_mb": round(peak_rss_mb),
        "archive_days": round(ARCHIVE_HOURS / (audio_h / seconds * 3600) / 24, 1),
    }


def _peak_rss_mb() -> float:
    """A worker process's peak resident memory (run on each worker)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=60.0)
    args = parser.parse_args()
    folder = _common.CACHE_DIR / "batch-inputs"
    inputs = [_common.input_file(args.duration_s, seed=seed, folder=folder) for seed in range(args.files)]
    rows = [measure(inputs, workers=int(count), out_dir=_common.CACHE_DIR / f"batch-out-{count}")
            for count in args.workers.split(",")]
    _common.write_json(RESULT, {
        "command": _common.command_line(),
        "machine": _common.machine_info(threads=1),
        "what": f"{args.files} files of {args.duration_s:g} s, bundled model, LocalCluster, "
                "one thread per worker",
        "archive": {"tapes": ARCHIVE_TAPES, "audio_hours": ARCHIVE_HOURS,
                    "note": "archive_days: days for the whole archive at each row's audio hours per hour"},
        "rows": rows,
    })
    for row in rows:
        print(SimpleNamespace(**row))


if __name__ == "__main__":
    main()
