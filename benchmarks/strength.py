"""Choose the default ``--strength-db`` on the *validation* split (never the test set or the real excerpt).

    python benchmarks/strength.py --model PATH [--corpus data/corpus] [--out benchmarks/results/strength.json]

For each strength, the mean SI-SDR improvement and LSDf80 over the same fixed validation pairs the
training run uses (the `training` preset), binned by input SNR. The default is the lowest strength
within 0.05 dB of the best mean gain, provided the highest-SNR bin (near-clean music) loses nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cassette_denoise.corpus import corpus_files
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.metrics import lsd, si_sdr
from cassette_denoise.training.examples import PairConfig, fixed_examples, scan_sources

STRENGTHS_DB = (6.0, 12.0, 20.0, 30.0, 40.0, 60.0)
SNR_BINS_DB = ((-5, 15), (15, 30), (30, 80))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/strength.json")
    args = parser.parse_args()

    sources = scan_sources(corpus_files(Path(args.corpus), "validation"), split="validation")
    noisy, target = (t.numpy() for t in fixed_examples(sources, config=PairConfig(preset="training", noise_snr_probability=0.0),
                                                       frames=256, count=args.count, seed=20_000))
    snr_db = np.array([10 * np.log10((t**2).sum() / ((n - t) ** 2).sum()) for n, t in zip(noisy, target)])
    before = np.array([si_sdr(t, n) for n, t in zip(noisy, target)])
    denoiser = Denoiser.from_checkpoint(args.model, device="cpu")
    rows = []
    for strength in STRENGTHS_DB:
        out = np.concatenate([denoiser.denoise(noisy[i: i + 8], 44100, strength_db=strength) for i in range(0, len(noisy), 8)])
        gain = np.array([si_sdr(t, o) for o, t in zip(out, target)]) - before
        lsd_f80 = np.array([lsd(t, o, floor_db=80) for o, t in zip(out, target)])
        row = {"strength_db": strength, "si_sdr_improvement_db": float(gain.mean()), "lsd_f80_db": float(lsd_f80.mean())}
        for low, high in SNR_BINS_DB:
            chosen = (snr_db >= low) & (snr_db < high)
            row[f"si_sdr_improvement_db_snr_{low}_{high}"] = float(gain[chosen].mean()) if chosen.any() else None
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": f"python benchmarks/strength.py --model {args.model} --corpus {args.corpus} --count {args.count}",
        "date": time.strftime("%Y-%m-%d"), "examples": args.count,
        "input_lsd_f80_db": float(np.mean([lsd(t, n, floor_db=80) for n, t in zip(noisy, target)])),
        "rows": rows,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
