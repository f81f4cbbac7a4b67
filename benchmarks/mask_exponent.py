"""Choose a model's mask exponents on the *validation* split (never the test set or the real excerpt).

    python benchmarks/mask_exponent.py [--model PATH] [--corpus data/corpus] [--out benchmarks/results/mask_exponent.json]
    python benchmarks/mask_exponent.py --treble [--model PATH] [--out benchmarks/results/treble_mask_exponent.json]

A model trained with a magnitude loss leaves its masks too close to 1 where they are well below 1:
over the validation pairs, the gain that best maps a bin's noisy STFT value onto the clean one is
about the mask squared. Raising the mask to a power ``p`` sharpens it and leaves a mask of 1 at 1.

For each exponent, the validation harness of ``quality.py`` (every simulator preset at input SNR 10,
20 and 40 dB) gives the mean SI-SDR improvement per SNR. The choice: the exponent with the best mean
improvement at 10 and 20 dB among those that lose nothing at 40 dB (near-clean music) against the
raw mask (exponent 1). Write it into the model's sidecar as ``calibration.mask_exponent``.

``--treble`` keeps that exponent and varies the one the treble gets (``denoiser.TREBLE_RAMP_HZ``
up). SI-SDR hardly sees the treble, so the choice there is by log-spectral distance: the lowest mean
LSDf80 over the three SNRs among the candidates whose mean SI-SDR improvement at each SNR is at most
0.05 dB and every preset's at most 0.15 dB below the treble exponent equal to the main one
(docs/MODEL_CARD.md, "Calibration"). Write it as ``calibration.treble_mask_exponent``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import _common
import quality

EXPONENTS = (1.0, 1.5, 2.0, 2.25, 2.5, 3.0)
#: Multiples of the main exponent; the first (1) is the reference the others must not fall behind.
TREBLE_FACTORS = (1.0, 1.5, 2.0, 3.0)
SNRS_DB = (10.0, 20.0, 40.0)
#: How far below the reference a treble candidate may fall: the mean at any SNR, any preset at any SNR.
TREBLE_MEAN_TOLERANCE_DB = 0.05
TREBLE_PRESET_TOLERANCE_DB = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--treble", action="store_true",
                        help="choose the treble exponent (the main one fixed at the model's calibrated one)")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--excerpts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.out is None:
        args.out = _common.RESULTS_DIR / ("treble_mask_exponent.json" if args.treble else "mask_exponent.json")
    document = choose_treble(args) if args.treble else choose_main(args)
    _common.write_json(args.out, {
        "benchmark": "treble_mask_exponent" if args.treble else "mask_exponent",
        "command": _common.command_line(),
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model or "bundled",
        **document,
    })


def choose_main(args) -> dict:
    rows = []
    for exponent in EXPONENTS:
        row = {"mask_exponent": exponent, **harness(args, "--mask-exponent", str(exponent))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    raw = next(row for row in rows if row["mask_exponent"] == 1.0)
    safe = [row for row in rows if row["si_sdr_improvement_db_at_40"] >= raw["si_sdr_improvement_db_at_40"]]
    chosen = max(safe, key=lambda row: row["si_sdr_improvement_db_at_10"] + row["si_sdr_improvement_db_at_20"])
    print(f"chosen mask exponent: {chosen['mask_exponent']:g}")
    return {
        "rule": "best mean SI-SDR improvement at 10 and 20 dB among exponents losing nothing at 40 dB vs exponent 1",
        "chosen_mask_exponent": chosen["mask_exponent"],
        "rows": rows,
    }


def choose_treble(args) -> dict:
    from cassette_denoise.denoiser import Denoiser

    denoiser = Denoiser.from_checkpoint(args.model, device="cpu") if args.model else Denoiser.from_pretrained(device="cpu")
    main_exponent = denoiser.mask_exponent
    rows = []
    for factor in TREBLE_FACTORS:
        treble = main_exponent * factor
        row = {"mask_exponent": main_exponent, "treble_mask_exponent": treble,
               **harness(args, "--mask-exponent", str(main_exponent), "--treble-mask-exponent", str(treble))}
        rows.append(row)
        print(json.dumps({key: value for key, value in row.items() if key != "by_preset"}), flush=True)
    reference = rows[0]

    def keeps_the_music(row: dict) -> bool:
        means = all(row[f"si_sdr_improvement_db_at_{snr:g}"] >= reference[f"si_sdr_improvement_db_at_{snr:g}"]
                    - TREBLE_MEAN_TOLERANCE_DB for snr in SNRS_DB)
        presets = all(row["by_preset"][key] >= value - TREBLE_PRESET_TOLERANCE_DB
                      for key, value in reference["by_preset"].items())
        return means and presets

    for row in rows:
        row["keeps_the_music"] = keeps_the_music(row)
    chosen = min((row for row in rows if row["keeps_the_music"]), key=lambda row: row["lsd_f80_db_mean"])
    print(f"chosen treble mask exponent: {chosen['treble_mask_exponent']:g}")
    return {
        "rule": (f"lowest mean LSDf80 over {', '.join(f'{snr:g}' for snr in SNRS_DB)} dB among treble exponents whose "
                 f"mean SI-SDR improvement at each SNR is at most {TREBLE_MEAN_TOLERANCE_DB} dB and every preset's at "
                 f"most {TREBLE_PRESET_TOLERANCE_DB} dB below the treble exponent equal to the main one"),
        "chosen_treble_mask_exponent": chosen["treble_mask_exponent"],
        "rows": rows,
    }


def harness(args, *options: str) -> dict:
    """The validation harness's scores for ours with extra ``quality.py`` options: mean SI-SDR
    improvement per SNR, each preset's per SNR, and the mean LSDf80 over all cells."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "quality.json"
        quality.main([
            "--corpus", args.corpus, "--split", "validation", "--no-peers", "--parts", "synthetic",
            "--snrs", ",".join(f"{snr:g}" for snr in SNRS_DB), "--excerpts", str(args.excerpts),
            "--presets", "all", "--threads", str(args.threads), *options,
            "--out", str(out), *(["--model", args.model] if args.model else []),
        ])
        summary = [row for row in json.loads(out.read_text())["synthetic"]["summary"] if row["method"] == "ours"]
    scores = {}
    for snr in SNRS_DB:
        scores[f"si_sdr_improvement_db_at_{snr:g}"] = float(np.mean(
            [item["si_sdr_improvement_db"] for item in summary if item["snr_db"] == snr]))
    scores["lsd_f80_db_mean"] = float(np.mean([item["lsd_f80_db"] for item in summary]))
    scores["by_preset"] = {f"{item['preset']}@{item['snr_db']:g}": item["si_sdr_improvement_db"] for item in summary}
    return scores


if __name__ == "__main__":
    main()
