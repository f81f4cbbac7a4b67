"""What ``cassette-denoise adapt`` buys on a noise family: the generalisation benchmark before and after.

For each family this renders :data:`NOISE_S` of its noise alone (one draw of
:mod:`cassette_denoise.simulate.families`, stereo, :data:`NOISE_DBFS` RMS: a deck's blank tape), adapts the bundled
model to it as the command does (``--max-minutes``, the corpus's music, ``--threads``), and scores the bundled and the
adapted model with ``generalisation.py`` on that family (the corpus's test music, new draws of the family, the ideal
ratio mask beside them). The held-out table adapt printed, the steps it took and every score go to
``results/adapt.json``.

    python benchmarks/adapt.py --families falling-tape,brown     # ≈ 12 min per family on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common
import generalisation
import quality

NOISE_S = 75.0
NOISE_DBFS = -60.0
SCORE_SNRS_DB = "10,20"

log = logging.getLogger("adapt-benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="falling-tape,brown",
                        help="comma-separated names of cassette_denoise.simulate.families.FAMILIES "
                             "(default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=quality.DEFAULT_CORPUS,
                        help="corpus folder: adapt trains on its music, the scores use its test split "
                             "(default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="adapt's time limit (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the noise draws (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "adapt.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import soundfile as sf

    from cassette_denoise.adapt import adapt
    from cassette_denoise.simulate.families import FAMILIES, family_noise, family_params_to_json, sample_family

    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        parser.error(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; choose from {sorted(FAMILIES)}")
    document = {"benchmark": "adapt", "command": _common.command_line(),
                "machine": _common.machine_info(threads=args.threads), "noise_s": NOISE_S, "noise_dbfs": NOISE_DBFS,
                "max_minutes": args.max_minutes, "families": {}}
    with tempfile.TemporaryDirectory(prefix="adapt-benchmark-") as folder:
        folder = Path(folder)
        for number, family in enumerate(families):
            rng = np.random.default_rng([args.seed, 26, number])
            params = sample_family(rng, family)
            samples = int(NOISE_S * _common.SAMPLE_RATE)
            noise = family_noise(np.zeros((2, samples), np.float32), _common.SAMPLE_RATE, params).astype(np.float64)
            noise *= 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(noise**2, axis=1, keepdims=True))
            blank = folder / f"{family}.wav"
            sf.write(blank, noise.T.astype(np.float32), _common.SAMPLE_RATE, subtype="FLOAT")
            model = folder / f"{family}.safetensors"
            log.info("%s: adapting (%g min)", family, args.max_minutes)
            started = time.monotonic()
            result = adapt([blank], model, corpus_dir=args.corpus, max_minutes=args.max_minutes,
                           threads=args.threads, seed=args.seed)
            wall_s = time.monotonic() - started
            scores = {}
            for name, extra in (("bundled", []), ("adapted", ["--model", str(model)])):
                out = folder / f"{family}-{name}.json"
                generalisation.main(["--corpus", str(args.corpus), "--families", family, "--no-peers",
                                     "--parts", "families", "--snrs", SCORE_SNRS_DB, "--threads", str(args.threads),
                                     "--out", str(out), *extra])
                scores[name] = json.loads(out.read_text())["summary"]
            document["families"][family] = {
                "noise_params": family_params_to_json(params),
                "adapt": {"wall_s": round(wall_s, 1), "steps": result.steps, "training_s": round(result.seconds, 1),
                          "held_out": [{"snr_db": row.snr_db, "input_db": row.input_db, "before_db": row.before_db,
                                        "after_db": row.after_db} for row in result.scores]},
                "generalisation": table(scores),
            }
            _common.write_json(args.out, document)
    log.info("wrote %s", args.out)
    return 0


def table(scores: dict[str, list[dict]]) -> list[dict]:
    """Per input SNR: SI-SDR improvement of the ideal ratio mask, the bundled model (with its automatic floor,
    and with the noise clip given) and the adapted model, dB. The adapted model carries its blank tape's floor,
    which the benchmark's rescaled noise does not keep, so it is given the floor of the example's noise clip:
    the same noise at the same level, as its blank tape is to a user's tapes."""
    rows = []
    for snr_db in sorted({row["snr_db"] for row in scores["bundled"]}):
        def gain(name: str, method: str) -> float:
            return next(row["si_sdr_improvement_db"] for row in scores[name]
                        if row["snr_db"] == snr_db and row["method"] == method)

        rows.append({
            "snr_db": snr_db,
            "ideal_ratio_mask": gain("bundled", "ideal ratio mask"),
            "bundled": gain("bundled", "ours"),
            "bundled_noise_clip_given": gain("bundled", "ours" + generalisation.CLIP_SUFFIX),
            "adapted": gain("adapted", "ours" + generalisation.CLIP_SUFFIX),
        })
    return rows


if __name__ == "__main__":
    sys.exit(main())
