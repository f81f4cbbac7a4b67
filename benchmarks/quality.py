"""Quality of our model and the peer denoisers: a synthetic test set and the real seed-cassette excerpt.

**Synthetic.** Fixed excerpts of clean music that training never sees (the corpus's ``test`` split:
music21 works by composers other than Bach; or any folder given with ``--clean-dir``) are played
through the cassette simulator once per preset. The simulation's additive noise (``noisy - target``)
is then scaled so that the target-to-noise ratio over the excerpt is exactly each input SNR, and the
untouched input, our model at its default strength, any ``--extra-model`` and every peer are scored
against the target with :func:`cassette_denoise.metrics.score`. Reported per preset and SNR: the
mean over excerpts of SI-SDR and of its improvement over the input, LSD, LSDf80 and segSNR.

**Real.** ``../shared/data/seed-cassette``: the AhRep cassette transfer against its clean version,
scored with :func:`cassette_denoise.evaluate.evaluate_pair` for the input, our model, the peers and the
seed project's output file. Skipped when the folder is absent.

    python benchmarks/quality.py                                   # bundled model, corpus at data/corpus
    python benchmarks/quality.py --model runs/w8/best.safetensors --extra-model seed-width=runs/w16/best.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import _common
from cassette_denoise.defaults import PRECISIONS

DEFAULT_CORPUS = Path("data/corpus")  # as built by the README's corpus command
SEED_CASSETTE_DIR = _common.SHARED_DIR / "data" / "seed-cassette"
DEFAULT_SNRS_DB = (0.0, 10.0, 20.0, 30.0)
#: Clean audio simulated on each side of an excerpt, so that the simulator's filters and the
#: speed drift have settled inside the part that is scored.
MARGIN_S = 0.5
#: Excerpts quieter than this are redrawn: a silent excerpt makes every ratio meaningless.
MIN_EXCERPT_DBFS = -45.0
REDRAWS = 20

log = logging.getLogger("quality")


@dataclass(frozen=True)
class Excerpt:
    name: str
    path: Path
    start_s: float
    audio: np.ndarray  # float32 (channels, samples) at 44.1 kHz, with MARGIN_S on each side


@dataclass(frozen=True)
class ModelMethod:
    """A checkpoint at one strength, under the name the tables show."""

    name: str
    denoiser: object
    strength_db: float

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.denoiser.denoise(audio, sample_rate, strength_db=self.strength_db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="corpus folder with manifest.json; only its 'test' split is used (default: %(default)s)")
    source.add_argument("--clean-dir", type=Path, help="use every audio file in this folder as clean music instead")
    parser.add_argument("--model", type=Path, help="checkpoint scored as 'ours' (default: the bundled model)")
    parser.add_argument("--extra-model", action="append", default=[], metavar="NAME=PATH",
                        help="another checkpoint to score, e.g. seed-width=runs/w16/best.safetensors (repeatable)")
    parser.add_argument("--excerpts", type=int, default=12, help="number of excerpts (default: %(default)s)")
    parser.add_argument("--excerpt-s", type=float, default=10.0,
                        help="excerpt length in seconds (default: %(default)s)")
    parser.add_argument("--snrs", default=",".join(f"{snr:g}" for snr in DEFAULT_SNRS_DB),
                        help="comma-separated input SNRs in dB (default: %(default)s)")
    parser.add_argument("--presets", default="all", help="comma-separated simulator presets (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the excerpts and the simulations")
    parser.add_argument("--parts", default="synthetic,real", help="which parts to run (default: %(default)s)")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="corpus split to draw music from: test (the reported scores) or validation (to choose "
                             "between checkpoints without looking at the test music)")
    parser.add_argument("--no-peers", action="store_true", help="score only the models (e.g. to compare checkpoints)")
    parser.add_argument("--strength-db", type=float,
                        help="strength for every model (default: the denoiser's default)")
    parser.add_argument("--mask-exponent", type=float,
                        help="mask exponent for every model (default: each model's calibrated one)")
    parser.add_argument("--treble-mask-exponent", type=float,
                        help="treble mask exponent for every model (default: each model's calibrated one, else "
                             "its mask exponent)")
    parser.add_argument("--hum", choices=("on", "off"),
                        help="the hum stage for every model (default: the denoiser's default)")
    parser.add_argument("--mono", action="store_true",
                        help="mix each excerpt down to one channel before the tape (a mono file; the stereo "
                             "excerpts give each track its own hiss)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the models' arithmetic (default: %(default)s, as the command line)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "quality.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB
    if args.strength_db is None:
        args.strength_db = DEFAULT_STRENGTH_DB
    from cassette_denoise.evaluate import peer_methods

    torch.set_num_threads(args.threads)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    unknown = parts - {"synthetic", "real"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose synthetic and/or real")
    models, described = load_models(args, parser)
    methods = [ModelMethod(name, denoiser, args.strength_db) for name, denoiser in models]
    if not args.no_peers:
        methods += peer_methods()

    document = {
        "benchmark": "quality",
        "command": _common.command_line(),
        "machine": _common.machine_info(threads=args.threads),
        "strength_db": args.strength_db,
        "models": described,
        "notes": [
            "Scores are against the simulator's target (the clean music through the tape's signal path), so only "
            "the removal of additive noise is measured.",
            "si_sdr_improvement_db: the method's SI-SDR minus the untouched input's, per example, then averaged.",
        ],
    }
    if "synthetic" in parts:
        document["synthetic"] = synthetic_test_set(args, methods)
        _common.write_json(args.out, document)
    if "real" in parts:
        document["real"] = real_excerpt(methods)
    _common.write_json(args.out, document)
    log.info("wrote %s", args.out)
    return 0


def load_models(args, parser) -> tuple[list[tuple[str, object]], dict]:
    """``[(name, Denoiser)]`` for ours and each extra model, and their descriptions for the results."""
    from cassette_denoise.checkpoint import CheckpointError
    from cassette_denoise.denoiser import Denoiser

    requested = [("ours", args.model)]
    for item in args.extra_model:
        name, _, path = item.partition("=")
        if not name or not path:
            parser.error(f"--extra-model wants NAME=PATH, got {item!r}")
        requested.append((name, Path(path)))
    models, described = [], {}
    options = {"mask_exponent": args.mask_exponent, "treble_mask_exponent": args.treble_mask_exponent,
               "precision": args.precision, **({"remove_hum": args.hum == "on"} if args.hum else {})}
    for name, path in requested:
        try:
            denoiser = Denoiser.from_checkpoint(path, **options) if path else Denoiser.from_pretrained(**options)
        except (CheckpointError, OSError) as error:
            hint = "" if path else " (the bundled weights are missing: pass --model PATH)"
            parser.error(f"{name}: cannot load the model: {error}{hint}")
        models.append((name, denoiser))
        described[name] = {
            "path": str(path) if path else "bundled",
            "config": dataclasses.asdict(denoiser.model.config),
            "mask_exponent": denoiser.mask_exponent,
            "treble_mask_exponent": denoiser.treble_mask_exponent,
            "remove_hum": denoiser.remove_hum,
            "training_data": denoiser.metadata.get("training_data"),
            "metrics": denoiser.metadata.get("metrics"),
        }
    exponents = {name: (denoiser.mask_exponent, denoiser.treble_mask_exponent) for name, denoiser in models}
    if len(set(exponents.values())) > 1:
        # A training checkpoint carries no calibration (exponent 1) while the bundled model has one, so as they
        # are the two would be compared raw mask against calibrated mask.
        log.warning("models compared at different (mask, treble mask) exponents %s; pass --mask-exponent and "
                    "--treble-mask-exponent to compare like with like", exponents)
    return models, described


# --- synthetic test set -------------------------------------------------------------------------

def synthetic_test_set(args, methods) -> dict:
    from cassette_denoise.simulate import PRESETS, apply_cassette, params_to_json, sample_cassette

    presets = list(PRESETS) if args.presets == "all" else [name.strip() for name in args.presets.split(",")]
    missing = [name for name in presets if name not in PRESETS]
    if missing:
        raise SystemExit(f"quality.py: error: unknown preset(s) {missing}; choose from {', '.join(PRESETS)}")
    snrs_db = [float(item) for item in args.snrs.split(",") if item.strip()]
    files, source = clean_files(args)
    excerpts = pick_excerpts(files, count=args.excerpts, duration_s=args.excerpt_s, seed=args.seed)
    margin = int(MARGIN_S * _common.SAMPLE_RATE)
    log.info("%d excerpts of %g s from %s; presets %s; SNRs %s dB", len(excerpts), args.excerpt_s, source,
             ", ".join(presets), ", ".join(f"{snr:g}" for snr in snrs_db))

    rows, simulations = [], []
    for preset_number, preset in enumerate(presets):
        started = time.perf_counter()
        for number, excerpt in enumerate(excerpts):
            # One generator per (preset, excerpt): any subset of presets or excerpts draws the same tapes.
            rng = np.random.default_rng([args.seed, 1, _common_hash(preset), number])
            params = sample_cassette(rng, preset=preset)
            audio = excerpt.audio.mean(axis=0, keepdims=True) if args.mono else excerpt.audio
            simulation = apply_cassette(audio, _common.SAMPLE_RATE, params)
            target = simulation.target[:, margin:-margin].astype(np.float64)
            noise = simulation.noisy[:, margin:-margin].astype(np.float64) - target
            simulations.append({"preset": preset, "excerpt": excerpt.name, "params": params_to_json(params),
                                "native_snr_db": _snr_db(target, noise)})
            for snr_db in snrs_db:
                noisy = at_snr(target, noise, snr_db)
                if noisy is None:
                    log.warning("%s on %s: no additive noise to scale; skipped", preset, excerpt.name)
                    continue
                for row in score_methods(target, noisy, methods):
                    rows.append({"preset": preset, "snr_db": snr_db, "excerpt": excerpt.name, **row})
        log.info("preset %s (%d/%d) done in %.0f s", preset, preset_number + 1, len(presets),
                 time.perf_counter() - started)
    return {
        "source": source,
        "channels": "mono downmix" if args.mono else "as the files have them",
        "excerpt_s": args.excerpt_s,
        "excerpts": [{"name": e.name, "path": str(e.path), "start_s": e.start_s} for e in excerpts],
        "presets": presets,
        "snrs_db": snrs_db,
        "summary": summarise(rows),
        "simulations": simulations,
        "rows": rows,
    }


def clean_files(args) -> tuple[list[tuple[Path, float]], str]:
    """``[(path, duration_s)]`` of the clean music to draw from, and a description of where it came from."""
    from cassette_denoise.audio import find_audio_files, probe
    from cassette_denoise.corpus import CorpusError, load_manifest

    if args.clean_dir:
        files = [(path, probe(path).duration_s) for path in find_audio_files(args.clean_dir)]
        if not files:
            raise SystemExit(f"quality.py: error: {args.clean_dir}: no audio files")
        return files, f"clean folder {args.clean_dir}"
    try:
        entries = load_manifest(args.corpus)
    except CorpusError as error:
        raise SystemExit(f"quality.py: error: {error} (or pass --clean-dir)") from None
    # Only music held apart from training: the test split shares no piece, composer or soundtrack with it.
    files = [(entry.path, entry.duration_s) for entry in entries if entry.split == args.split]
    if not files:
        raise SystemExit(f"quality.py: error: {args.corpus}: the corpus has no {args.split} split yet (or pass --clean-dir)")
    return files, f"{args.split} split of the corpus at {args.corpus}"


def pick_excerpts(files: list[tuple[Path, float]], *, count: int, duration_s: float, seed: int) -> list[Excerpt]:
    """``count`` excerpts from different files where possible, at seeded positions, skipping near-silence."""
    from cassette_denoise.audio import probe, read_excerpt, resample

    needed_s = duration_s + 2 * MARGIN_S
    usable = sorted((path, length) for path, length in files if length >= needed_s)
    if not usable:
        raise SystemExit(f"quality.py: error: no clean file is at least {needed_s:g} s long")
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(len(usable))
    excerpts = []
    for number in range(count):
        path, length = usable[order[number % len(usable)]]
        rate = probe(path).sample_rate
        for _ in range(REDRAWS):
            start_s = float(rng.uniform(0, length - needed_s))
            audio = read_excerpt(path, start_frame=int(start_s * rate), frames=int(round(needed_s * rate)))
            if rate != _common.SAMPLE_RATE:
                audio = resample(audio, rate, _common.SAMPLE_RATE)
            level = 10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-20)
            if level > MIN_EXCERPT_DBFS:
                break
        name = f"{_short_name(path)}@{start_s + MARGIN_S:.1f}s"
        excerpts.append(Excerpt(name, path, start_s + MARGIN_S, audio))
    return excerpts


def at_snr(target: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray | None:
    """``target + g * noise`` with ``g`` chosen so that the target-to-noise power ratio (all channels) is ``snr_db``."""
    noise_power = np.mean(noise**2)
    if noise_power <= 0:
        return None
    gain = np.sqrt(np.mean(target**2) / noise_power * 10 ** (-snr_db / 10))
    return target + gain * noise


def score_methods(target: np.ndarray, noisy: np.ndarray, methods) -> list[dict]:
    """Scores of the input and each method on one example; a method that fails is recorded, not fatal."""
    from cassette_denoise import metrics
    from cassette_denoise.evaluate import INPUT_METHOD, Skipped

    rate = _common.SAMPLE_RATE
    base = metrics.score(target, noisy, sample_rate=rate)
    rows = [{"method": INPUT_METHOD, **base, "si_sdr_improvement_db": 0.0, "seconds": None}]
    for method in methods:
        if isinstance(method, Skipped):
            rows.append({"method": method.name, "skipped": method.reason})
            continue
        started = time.perf_counter()
        try:
            output = np.atleast_2d(method.denoise(noisy.astype(np.float32), rate))
        except Exception as error:  # one failing denoiser must not hide the others' scores
            log.warning("%s failed: %s", method.name, error)
            rows.append({"method": method.name, "skipped": f"failed ({error})"})
            continue
        seconds = time.perf_counter() - started
        scores = metrics.score(target, output, sample_rate=rate)
        rows.append({"method": method.name, **scores,
                     "si_sdr_improvement_db": scores["si_sdr_db"] - base["si_sdr_db"], "seconds": seconds})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (preset, SNR, method) the mean of each metric over the excerpts where the method was scored."""
    keys = ("si_sdr_db", "si_sdr_improvement_db", "lsd_db", "lsd_f80_db", "seg_snr_db", "seconds")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["preset"], row["snr_db"], row["method"]), []).append(row)
    summary = []
    for (preset, snr_db, method), members in groups.items():
        scored = [row for row in members if "skipped" not in row]
        entry = {"preset": preset, "snr_db": snr_db, "method": method, "n": len(scored)}
        for key in keys:
            values = [row[key] for row in scored if row.get(key) is not None]
            entry[key] = float(np.mean(values)) if values else None
        if not scored:
            entry["skipped"] = members[0]["skipped"]
        summary.append(entry)
    return summary


# --- the real excerpt -----------------------------------------------------------------------------

def real_excerpt(methods) -> dict:
    from cassette_denoise.evaluate import INPUT_METHOD, Pair, evaluate_pair

    folder = SEED_CASSETTE_DIR
    noisy, clean = folder / "ahrep_cassette.wav", folder / "ahrep_clean.wav"
    seed_output = folder / "ahrep_seed_model_output.wav"
    if not (noisy.is_file() and clean.is_file()):
        log.warning("%s: the seed-cassette excerpt is absent; skipped", folder)
        return {"skipped": f"{folder}: ahrep_cassette.wav / ahrep_clean.wav not found"}
    started = time.perf_counter()
    rows = evaluate_pair(Pair("AhRep", noisy, clean), methods=methods,
                         denoised=[seed_output] if seed_output.is_file() else [])
    records = []
    base = next(row.metrics for row in rows if row.method == INPUT_METHOD)
    for row in rows:
        record = dataclasses.asdict(row)
        if row.method == seed_output.name:
            record["method"] = "seed project's model (its output file)"
        if row.metrics:
            record["si_sdr_improvement_db"] = row.metrics["si_sdr_db"] - base["si_sdr_db"]
        records.append({key: value for key, value in record.items() if value is not None or key == "metrics"})
    log.info("real excerpt done in %.0f s", time.perf_counter() - started)
    return {"noisy": str(noisy), "clean": str(clean), "rows": records}


def _snr_db(target: np.ndarray, noise: np.ndarray) -> float | None:
    noise_power = np.mean(noise**2)
    return float(10 * np.log10(np.mean(target**2) / noise_power)) if noise_power > 0 else None


def _short_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _common_hash(text: str) -> int:
    """A stable 32-bit number for a name (Python's ``hash`` changes between runs)."""
    import zlib

    return zlib.crc32(text.encode())


if __name__ == "__main__":
    sys.exit(main())
