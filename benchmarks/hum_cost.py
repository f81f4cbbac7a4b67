"""What the hum stage costs on music without hum and with it.

The stage should cost in proportion to what it finds: on a tape without hum only the search of each
segment's spectrum, with hum also the steadiness test and the fit along the hum's phase. This times
:class:`cassette_denoise.hum.HumRemover` alone (in the denoise command's block size, at ``--threads`` torch
threads) on the synthetic 60 s test file of ``speed.py`` as it is, with 60 Hz hum added (seven harmonics at
-40 dBFS each), and with off-speed hum (five harmonics of 48.5 Hz, -40 dBFS together, drifting 0.5 % at
0.2 Hz), the three alternated for ``--repeats`` rounds; medians and the real-time factor in
``results/hum_cost.json``.

    python benchmarks/hum_cost.py
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

HUM_DBFS = -40.0
HUM_HZ = 60.0
HUM_HARMONICS = 7
OFF_SPEED_HZ = 48.5
OFF_SPEED_DRIFT = (0.5, 0.2)  # percent, Hz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=60.0, help="test file length (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=_common.CACHE_DIR)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "hum_cost.json")
    args = parser.parse_args(argv)

    import torch

    from cassette_denoise.audio import read_audio
    from cassette_denoise.denoiser import BLOCK_FRAMES

    torch.set_num_threads(args.threads)
    music, sample_rate = read_audio(_common.input_file(args.duration_s, folder=args.cache_dir))
    t = np.arange(music.shape[1]) / sample_rate
    hum = sum(10 ** (HUM_DBFS / 20) * np.cos(2 * np.pi * HUM_HZ * k * t + k) for k in range(1, HUM_HARMONICS + 1))
    inputs = {"no hum": music, f"{HUM_HZ:g} Hz hum": (music + hum).astype(np.float32),
              f"{OFF_SPEED_HZ:g} Hz drifting hum": (music + off_speed_hum(music.shape, sample_rate)).astype(np.float32)}
    times: dict[str, list[float]] = {name: [] for name in inputs}
    removed = {}
    for _ in range(args.repeats):
        for name, audio in inputs.items():
            started = time.perf_counter()
            out = run_stage(audio, sample_rate, block_frames=BLOCK_FRAMES)
            times[name].append(time.perf_counter() - started)
            removed[name] = float(np.sqrt(np.mean((out - audio) ** 2)))
    rows = [{"input": name, "median_s": statistics.median(runs), "rtf": statistics.median(runs) / args.duration_s,
             "runs_s": runs, "removed_rms": removed[name]} for name, runs in times.items()]
    document = {
        "benchmark": "hum_cost",
        "command": _common.command_line(),
        "machine": {**_common.machine_info(threads=args.threads), "load_average_at_end": list(os.getloadavg())},
        "notes": ["HumRemover alone, fed in the denoise command's blocks; removed_rms: RMS of what it took out."],
        "rows": rows,
    }
    _common.write_json(args.out, document)
    for row in rows:
        print(f"{row['input']:<24} {row['median_s']:.3f} s  rtf {row['rtf']:.4f}  removed rms {row['removed_rms']:.2e}",
              file=sys.stderr)
    return 0


def off_speed_hum(shape: tuple[int, int], sample_rate: int) -> np.ndarray:
    """Off-speed hum ``shape`` ``(channels, samples)``: the same draw every run."""
    from cassette_denoise.simulate.families import OffSpeedHum, TonalLines

    drift_percent, drift_hz = OFF_SPEED_DRIFT
    params = OffSpeedHum.sample_params(np.random.default_rng(0), fundamental_hz=(OFF_SPEED_HZ,) * 2,
                                       level_dbfs=(HUM_DBFS,) * 2, drift_percent=(drift_percent,) * 2,
                                       drift_hz=(drift_hz,) * 2)
    return TonalLines.render(params, channels=shape[0], samples=shape[1], sample_rate=sample_rate)


def run_stage(audio: np.ndarray, sample_rate: int, *, block_frames: int, stage: type | None = None) -> np.ndarray:
    """A line stage (default: the hum stage, :class:`~cassette_denoise.hum.HumRemover`) over ``audio``
    ``(channels, samples)``, block by block as the denoiser streams it."""
    from cassette_denoise.hum import HumRemover

    remover = (stage or HumRemover)(channels=audio.shape[0], sample_rate=sample_rate)
    pieces = [remover.process(audio[:, start: start + block_frames])
              for start in range(0, audio.shape[1], block_frames)]
    return np.concatenate([*pieces, remover.finish()], axis=1)


if __name__ == "__main__":
    sys.exit(main())
