"""What the whine stage costs on music without whine and with it.

On a tape without whine the stage pays for its detection only (8192-sample frames of the channels' mean,
and the candidate lines' level test); each line it finds adds the tracking and the fit, twice over, as the
windows overlap by half. This times :class:`cassette_denoise.whine.WhineRemover` alone (in the denoise
command's block size) on the synthetic test file of ``speed.py`` as it is, and with two whine lines added
(1.23 and 3.15 kHz, -50 dBFS each, drifting 0.3 % at 0.2 Hz), alternated for ``--repeats`` rounds; medians,
the real-time factor and the lines found in ``results/whine_cost.json``.

    python benchmarks/whine_cost.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _common
from hum_cost import run_stage

LINES_HZ = (1230.0, 3150.0)
LINE_DBFS = -50.0
DRIFT = (0.3, 0.2)  # percent, Hz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=300.0, help="test file length (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=_common.CACHE_DIR)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "whine_cost.json")
    args = parser.parse_args(argv)

    from cassette_denoise.audio import read_audio
    from cassette_denoise.denoiser import BLOCK_FRAMES
    from cassette_denoise.simulate.families import TonalLines, TonalLinesParams
    from cassette_denoise.whine import WhineRemover

    music, sample_rate = read_audio(_common.input_file(args.duration_s, folder=args.cache_dir))
    drift_percent, drift_hz = DRIFT
    lines = TonalLines.render(TonalLinesParams(frequencies_hz=LINES_HZ, levels_dbfs=(LINE_DBFS,) * len(LINES_HZ),
                                               phases_rad=(0.3, 1.1), drift_percent=drift_percent, drift_hz=drift_hz,
                                               drift_phase_rad=0.0),
                              channels=music.shape[0], samples=music.shape[1], sample_rate=sample_rate)
    inputs = {"no whine": music, "two drifting whine lines": (music + lines).astype(np.float32)}
    times: dict[str, list[float]] = {name: [] for name in inputs}
    found: dict[str, list[float]] = {}
    left_db: dict[str, float | None] = {}
    for _ in range(args.repeats):
        for name, audio in inputs.items():
            stage = _Recording(WhineRemover)
            started = time.perf_counter()
            out = run_stage(audio, sample_rate, block_frames=BLOCK_FRAMES, stage=stage)
            times[name].append(time.perf_counter() - started)
            found[name] = stage.remover.found_hz
            # What is left of the lines, against the lines: the music alone is the reference.
            left_db[name] = (float(10 * np.log10(np.mean((out - music) ** 2) / np.mean(lines ** 2)))
                             if name != "no whine" else None)
    rows = [{"input": name, "median_s": statistics.median(runs), "rtf": statistics.median(runs) / args.duration_s,
             "runs_s": runs, "found_hz": found[name], "left_of_the_lines_db": left_db[name]}
            for name, runs in times.items()]
    document = {
        "benchmark": "whine_cost",
        "command": _common.command_line(),
        "machine": {**_common.machine_info(threads=1), "load_average_at_end": list(os.getloadavg())},
        "notes": ["WhineRemover alone, fed in the denoise command's blocks; left_of_the_lines_db: the output minus "
                  "the music, against the lines added (the music's own content within the fit's few hertz counts "
                  "as left)."],
        "rows": rows,
    }
    _common.write_json(args.out, document)
    for row in rows:
        print(f"{row['input']:<26} {row['median_s']:.3f} s  rtf {row['rtf']:.4f}  found {row['found_hz']}  "
              f"left {row['left_of_the_lines_db']}", file=sys.stderr)
    return 0


class _Recording:
    """Builds the stage as ``run_stage`` asks and keeps it, to read what it found."""

    def __init__(self, stage: type):
        self.stage, self.remover = stage, None

    def __call__(self, **options):
        self.remover = self.stage(**options)
        return self.remover


if __name__ == "__main__":
    sys.exit(main())
