"""How long the installed console script takes to answer without doing any work.

``cassette-denoise --help``, ``--version``, each command's ``--help`` and an argument error should answer
at once, without importing torch, numpy or matplotlib. Each case runs ``--repeats`` times in a fresh
process, the cases alternated round by round so that a change in the machine's load touches all of them
alike; the wall time of each run (process start to exit, as ``time`` shows it) is recorded, and the median.

    python benchmarks/startup.py                   # 5 rounds -> results/startup.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common

TARGET_S = 0.5
#: (label, arguments, expected exit code): a usage error exits with 2.
CASES = (
    ("--help", ["--help"], 0),
    ("--version", ["--version"], 0),
    ("denoise --help", ["denoise", "--help"], 0),
    ("evaluate --help", ["evaluate", "--help"], 0),
    ("simulate --help", ["simulate", "--help"], 0),
    ("compare --help", ["compare", "--help"], 0),
    ("usage error: denoise without arguments", ["denoise"], 2),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "startup.json")
    args = parser.parse_args(argv)

    script = Path(sys.executable).with_name("cassette-denoise")
    if not script.is_file():
        parser.error(f"{script}: the console script is not installed next to this Python")
    times: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    for _ in range(args.repeats):
        for label, arguments, expected in CASES:
            started = time.perf_counter()
            done = subprocess.run([str(script), *arguments], capture_output=True)
            times[label].append(time.perf_counter() - started)
            if done.returncode != expected:
                raise SystemExit(f"startup.py: {label}: exit code {done.returncode}, expected {expected}")
    rows = [{"case": label, "command": ["cassette-denoise", *arguments], "median_s": statistics.median(times[label]),
             "min_s": min(times[label]), "max_s": max(times[label]), "runs_s": times[label]}
            for label, arguments, _ in CASES]
    document = {
        "benchmark": "startup",
        "command": _common.command_line(),
        "machine": {**_common.machine_info(threads=1), "load_average_at_end": list(os.getloadavg())},
        "target_s": TARGET_S,
        "notes": [f"wall time of a fresh process, median of {args.repeats} alternated rounds"],
        "rows": rows,
    }
    _common.write_json(args.out, document)
    for row in rows:
        print(f"{row['case']:<42} median {row['median_s']:.3f} s  (min {row['min_s']:.3f}, max {row['max_s']:.3f})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
