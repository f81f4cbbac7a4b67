"""Generalisation: how well each denoiser removes noise families it was not made for.

Clean test music (the corpus's ``test`` split, or ``--clean-dir``) gets noise from one held-out
family at a time: floors of several colours and a whine from
:mod:`cassette_denoise.simulate.families`, one simulator preset, and, when ``../shared`` exists, the
real excerpt's residual (``ahrep_cassette − ahrep_clean``; evaluation only). The noise is scaled to
each input SNR over the excerpt, and the input, the bundled model, the ideal ratio mask (an oracle
that knows music and noise, on the package's own STFT) and the peers are scored against the clean
music with :func:`cassette_denoise.metrics.score`. A model with a noise-floor input is scored twice:
with the floor it estimates around each tile, and with the true noise clip given (``noise_floor`` measured
on :data:`NOISE_CLIP_S` of the same noise at the same level, from another stretch of it: what
``denoise --noise-sample`` or ``--noise-from`` gives it). For every row it also measures what a listener
hears in quiet passages: the 1-5 kHz noise in the quietest 30 % of frames, before and after.

    python benchmarks/generalisation.py                    # ≈ 15 min on 2 cores: 4 excerpts × 10 s per cell
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

import _common
import quality
from cassette_denoise.defaults import PRECISIONS

DEFAULT_FAMILIES = ("white", "pink", "brown", "falling-tape", "whine", "preset:walkman-ferric", "real-residual")
QUIET_SHARE = 0.3
QUIET_BAND_HZ = (1000.0, 5000.0)
#: In the quiet passages of the measured falling tape its 1-5 kHz noise (-72 dBFS) stood 7 dB above the
#: music there (-79): the quiet-passage part scales the family's noise to that.
QUIET_FAMILY = "falling-tape"
QUIET_NOISE_OVER_MUSIC_DB = 7.0
#: The noise clip a model is given, as long as a lead-in a user names with ``--noise-from 0:00-0:05``.
NOISE_CLIP_S = 5.0
CLIP_SUFFIX = ", noise clip given"

log = logging.getLogger("generalisation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, default=quality.DEFAULT_CORPUS,
                        help="corpus folder with manifest.json; only its 'test' split is used (default: %(default)s)")
    source.add_argument("--clean-dir", type=Path, help="use every audio file in this folder as clean music instead")
    parser.add_argument("--model", type=Path, help="checkpoint scored as 'ours' (default: the bundled model)")
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                        help="comma-separated: names of cassette_denoise.simulate.families.FAMILIES, "
                             "preset:NAME for a simulator preset, real-residual (default: %(default)s)")
    parser.add_argument("--excerpts", type=int, default=4, help="excerpts per cell (default: %(default)s)")
    parser.add_argument("--excerpt-s", type=float, default=10.0, help="excerpt length, s (default: %(default)s)")
    parser.add_argument("--snrs", default="0,10,20,30", help="comma-separated input SNRs, dB (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the excerpts and the noises")
    parser.add_argument("--no-peers", action="store_true", help="score only the model and the oracle")
    parser.add_argument("--parts", default="families,quiet",
                        help="families (every family at every SNR) and/or quiet (the falling tape with its 1-5 kHz "
                             "noise 7 dB above the music in the quietest 30 %% of frames) (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the model's arithmetic (default: %(default)s, as the command line)")
    parser.add_argument("--clip-offset-db", type=float, default=0.0,
                        help="scale each noise clip this many dB off the level of the example's noise: how a floor "
                             "measured at another level serves (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "generalisation.json")
    args = parser.parse_args(argv)
    args.split = "test"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    from cassette_denoise.evaluate import peer_methods

    torch.set_num_threads(args.threads)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    check_families(parser, families)
    skipped = {}
    if "real-residual" in families and not (quality.SEED_CASSETTE_DIR / "ahrep_cassette.wav").is_file():
        log.warning("%s: the real excerpt is absent; real-residual skipped", quality.SEED_CASSETTE_DIR)
        skipped["real-residual"] = f"{quality.SEED_CASSETTE_DIR}: ahrep_cassette.wav not found"
        families.remove("real-residual")
    snrs_db = [float(item) for item in args.snrs.split(",") if item.strip()]
    args.extra_model, args.mask_exponent, args.treble_mask_exponent, args.hum = [], None, None, None
    models, described = quality.load_models(args, parser)
    from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB

    methods = [quality.ModelMethod(name, denoiser, DEFAULT_STRENGTH_DB) for name, denoiser in models]
    if not args.no_peers:
        methods += peer_methods()
    files, source = quality.clean_files(args)
    excerpts = quality.pick_excerpts(files, count=args.excerpts, duration_s=args.excerpt_s, seed=args.seed)
    log.info("%d excerpts of %g s from %s; families %s; SNRs %s dB", len(excerpts), args.excerpt_s, source,
             ", ".join(families), args.snrs)

    document = {
        "benchmark": "generalisation",
        "command": _common.command_line(),
        "machine": _common.machine_info(threads=args.threads),
        "models": described,
        "source": source,
        "excerpts": [{"name": e.name, "path": str(e.path), "start_s": e.start_s} for e in excerpts],
        "excerpt_s": args.excerpt_s,
        "families": {name: describe_family(name) for name in families},
        "skipped_families": skipped,
        "snrs_db": snrs_db,
        "noise_clip_s": NOISE_CLIP_S,
        "noise_clip_offset_db": args.clip_offset_db,
        "notes": NOTES,
    }
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if parts - {"families", "quiet"}:
        parser.error(f"unknown part(s) {sorted(parts - {'families', 'quiet'})}; choose families and/or quiet")
    if "quiet" in parts:
        document["quiet_passages"] = quiet_passages(excerpts, methods, seed=args.seed)
        _common.write_json(args.out, document)
    rows, noises = [], []
    for family in families if "families" in parts else []:
        started = time.perf_counter()
        for number, excerpt in enumerate(excerpts):
            rng = np.random.default_rng([args.seed, 2, quality._common_hash(family), number])
            target, noise, clip, params = family_example(family, excerpt, rng)
            noises.append({"family": family, "excerpt": excerpt.name, "params": params,
                           "noise_clip_s": None if clip is None else clip.shape[1] / _common.SAMPLE_RATE})
            for snr_db in snrs_db:
                noisy = quality.at_snr(target, noise, snr_db)
                clip_methods = with_noise_clip(methods, scaled_like(clip, noise, noisy - target,
                                                                    offset_db=args.clip_offset_db))
                for row in score_methods(target, noisy, clip_methods):
                    rows.append({"family": family, "snr_db": snr_db, "excerpt": excerpt.name, **row})
        log.info("family %s done in %.0f s", family, time.perf_counter() - started)
        document.update(summary=summarise(rows), noises=noises, rows=rows)
        _common.write_json(args.out, document)
    log.info("wrote %s", args.out)
    return 0


def quiet_passages(excerpts, methods, *, seed: int) -> dict:
    """:data:`QUIET_FAMILY` noise (each excerpt's own draw, as in the family part) scaled so that in the
    quietest 30 % of frames its 1-5 kHz band stands :data:`QUIET_NOISE_OVER_MUSIC_DB` above the music's."""
    started = time.perf_counter()
    rows = []
    for number, excerpt in enumerate(excerpts):
        rng = np.random.default_rng([seed, 2, quality._common_hash(QUIET_FAMILY), number])
        target, noise, clip, _ = family_example(QUIET_FAMILY, excerpt, rng)
        band = QuietBand(target, noise)
        gain = 10 ** ((QUIET_NOISE_OVER_MUSIC_DB - (band.noise_dbfs - band.music_dbfs)) / 20)
        noise, clip = noise * gain, clip * gain
        noisy = target + noise
        snr_db = float(10 * np.log10(np.mean(target**2) / np.mean(noise**2)))
        for row in score_methods(target, noisy, with_noise_clip(methods, clip)):
            rows.append({"family": QUIET_FAMILY, "snr_db": snr_db, "excerpt": excerpt.name, **row})
    log.info("quiet passages done in %.0f s", time.perf_counter() - started)
    summary = summarise([{**row, "snr_db": None} for row in rows])
    return {"family": QUIET_FAMILY, "noise_over_music_db": QUIET_NOISE_OVER_MUSIC_DB,
            "input_snr_db": [row["snr_db"] for row in rows if row["method"] == "input"],
            "summary": summary, "rows": rows}


NOTES = [
    "Scores are against the clean music (for a simulator preset: the simulator's target, the music through the "
    "tape's signal path), so only the removal of additive noise is measured.",
    "si_sdr_improvement_db: the method's SI-SDR minus the untouched input's, per example, then averaged.",
    "ideal ratio mask: sqrt(|S|^2 / (|S|^2 + |N|^2)) from the true music S and noise N on the package's STFT, "
    "applied to the noisy STFT: what a mask on these spectra can reach at best.",
    "quiet_band: in the quietest 30 % of frames (by the clean music's level; metrics-module STFT, 2048 points), "
    "the 1-5 kHz band level of the music, of the input's noise (noisy - clean) and of the output's error "
    "(output - clean), in dBFS (a full-scale sine reads -3), and reduction_db = input noise - output error.",
    "real-residual: ahrep_cassette - ahrep_clean from ../shared/data/seed-cassette, a seeded 10 s stretch per "
    "excerpt; it also holds the reference's own treatment of that excerpt's music (see docs/real-excerpt.md).",
    f"'<model>{CLIP_SUFFIX}': the same model and strength with its noise-floor input measured on a clip of the "
    f"same noise (Denoiser.noise_floor) instead of on each tile, as denoise --noise-sample gives it. The clip is "
    f"{NOISE_CLIP_S:g} s of the family's noise with the example's params, rendered past the excerpt (for a "
    "simulator preset: the tape played over silence after it), at the example's noise gain; for real-residual, "
    "the longer stretch of the residual outside the example's, up to the same length (skipped under 1 s).",
    "The bundled model was trained on all six simulator presets; a preset is held out only for models trained "
    "without it.",
]


def check_families(parser, families: list[str]) -> None:
    from cassette_denoise.simulate import PRESETS
    from cassette_denoise.simulate.families import FAMILIES

    for name in families:
        if name == "real-residual" or name in FAMILIES:
            continue
        if name.startswith("preset:") and name.removeprefix("preset:") in PRESETS:
            continue
        parser.error(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}, real-residual, "
                     f"or preset:NAME with NAME one of {', '.join(PRESETS)}")


def describe_family(name: str) -> str:
    from cassette_denoise.simulate import PRESETS
    from cassette_denoise.simulate.families import FAMILIES

    if name == "real-residual":
        return "the real excerpt's residual, ahrep_cassette - ahrep_clean (evaluation only)"
    if name.startswith("preset:"):
        return f"simulator preset {name.removeprefix('preset:')}: {PRESETS[name.removeprefix('preset:')].description}"
    return FAMILIES[name].description


def family_example(family: str, excerpt, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                            object]:
    """``(target, noise, clip, params)``: float64 ``(channels, samples)`` of the scored part, the same noise's
    clip of :data:`NOISE_CLIP_S` from outside it at the same gain (None where there is too little), and what was drawn.

    The excerpt's noise is rendered exactly as without a clip; the clip comes from a second, longer
    render with the same params, from past the excerpt's end.
    """
    from cassette_denoise.simulate import apply_cassette, params_to_json, sample_cassette
    from cassette_denoise.simulate.families import family_noise, family_params_to_json, sample_family

    margin = int(quality.MARGIN_S * _common.SAMPLE_RATE)
    audio = excerpt.audio
    longer = np.pad(audio, ((0, 0), (0, int(NOISE_CLIP_S * _common.SAMPLE_RATE))))
    if family.startswith("preset:"):
        params = sample_cassette(rng, preset=family.removeprefix("preset:"))
        simulation = apply_cassette(audio, _common.SAMPLE_RATE, params)
        target = simulation.target[:, margin:-margin].astype(np.float64)
        played_on = apply_cassette(longer, _common.SAMPLE_RATE, params)
        clip = (played_on.noisy - played_on.target)[:, audio.shape[1]:].astype(np.float64)
        return target, simulation.noisy[:, margin:-margin].astype(np.float64) - target, clip, params_to_json(params)
    target = audio[:, margin:-margin].astype(np.float64)
    if family == "real-residual":
        residual, start, clip = real_residual(target.shape[1], rng)
        return target, residual, clip, {"start_s": start / _common.SAMPLE_RATE}
    params = sample_family(rng, family)
    noise = family_noise(audio, _common.SAMPLE_RATE, params)[:, margin:-margin]
    clip = family_noise(longer, _common.SAMPLE_RATE, params)[:, audio.shape[1]:]
    return target, noise.astype(np.float64), clip.astype(np.float64), family_params_to_json(params)


def real_residual(samples: int, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray | None]:
    """A seeded stretch of the real residual, its start, and the longer stretch outside it (up to
    :data:`NOISE_CLIP_S`; None if under ``MIN_NOISE_CLIP_S``) as its noise clip."""
    from cassette_denoise.audio import read_audio
    from cassette_denoise.defaults import MIN_NOISE_CLIP_S

    folder = quality.SEED_CASSETTE_DIR
    noisy, rate = read_audio(folder / "ahrep_cassette.wav")
    clean, _ = read_audio(folder / "ahrep_clean.wav")
    if rate != _common.SAMPLE_RATE or noisy.shape[1] < samples:
        raise SystemExit(f"generalisation.py: error: {folder}: need {samples} samples at {_common.SAMPLE_RATE} Hz")
    start = int(rng.integers(0, noisy.shape[1] - samples + 1))
    residual = noisy.astype(np.float64) - clean.astype(np.float64)
    before, after = residual[:, :start], residual[:, start + samples:]
    clip = (before if before.shape[1] > after.shape[1] else after)[:, : int(NOISE_CLIP_S * rate)]
    return residual[:, start: start + samples], start, clip if clip.shape[1] >= MIN_NOISE_CLIP_S * rate else None


def scaled_like(clip: np.ndarray | None, noise: np.ndarray, scaled_noise: np.ndarray, *,
                offset_db: float = 0.0) -> np.ndarray | None:
    """``clip`` with the gain that made ``scaled_noise`` of ``noise``, and ``offset_db`` more."""
    if clip is None:
        return None
    return clip * np.sqrt(np.mean(scaled_noise**2) / np.mean(noise**2)) * 10 ** (offset_db / 20)


class NoiseClipGiven:
    """A model method with its noise floor measured on the example's noise clip instead of around each tile."""

    def __init__(self, method, clip: np.ndarray):
        self.method, self.clip = method, clip
        self.name = method.name + CLIP_SUFFIX

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        denoiser = self.method.denoiser
        floor = denoiser.noise_floor(self.clip.astype(np.float32), sample_rate)
        return denoiser.denoise(audio, sample_rate, strength_db=self.method.strength_db, noise_floor=floor)


def with_noise_clip(methods: list, clip: np.ndarray | None) -> list:
    """``methods`` with, after each model that has a noise-floor input, that model given ``clip``. A model
    that carries a noise floor (``adapt`` writes one with its blank tape's) is scored with the clip only: the
    floor it carries is at the level of that tape, not at the level this example's noise was scaled to."""
    from cassette_denoise.evaluate import Skipped

    extended = []
    for method in methods:
        carries_floor = isinstance(method, quality.ModelMethod) and method.denoiser.carried_noise_floor is not None
        extended.append(Skipped(method.name, "carries its blank tape's noise floor; scored with the noise clip")
                        if carries_floor else method)
        if isinstance(method, quality.ModelMethod) and method.denoiser.model.config.noise_floor_input:
            extended.append(NoiseClipGiven(method, clip) if clip is not None else
                            Skipped(method.name + CLIP_SUFFIX, "no noise clip of 1 s outside the example"))
    return extended


class IdealRatioMask:
    """The oracle: knows the music and the noise of one example."""

    name = "ideal ratio mask"

    def __init__(self, target: np.ndarray, noise: np.ndarray):
        self.target, self.noise = target, noise

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        music, noise = _spectra(self.target), _spectra(self.noise)
        mask = torch.sqrt(music.abs() ** 2 / (music.abs() ** 2 + noise.abs() ** 2 + 1e-20))
        return _inverse(_spectra(audio) * mask, audio.shape[-1])


def _spectra(audio: np.ndarray):
    """``(channels, samples)`` -> ``(channels, BINS, frames)`` complex, framed as the denoiser frames a file."""
    import torch

    from cassette_denoise import spectral

    return spectral.stft(spectral.pad_signal(torch.from_numpy(np.asarray(audio, np.float32))))


def _inverse(spectra, samples: int) -> np.ndarray:
    from cassette_denoise import spectral

    frame_sum, envelope = spectral.istft_frames(spectra)
    start = spectral.pad_amount()
    return (frame_sum[:, start: start + samples] / envelope[start: start + samples]).numpy()


def score_methods(target: np.ndarray, noisy: np.ndarray, methods) -> list[dict]:
    """Scores and quiet-band levels of the input, the oracle and each method on one example."""
    from cassette_denoise import metrics
    from cassette_denoise.evaluate import INPUT_METHOD, Skipped

    rate = _common.SAMPLE_RATE
    quiet = QuietBand(target, noisy - target)
    base = metrics.score(target, noisy, sample_rate=rate)
    rows = [{"method": INPUT_METHOD, **base, "si_sdr_improvement_db": 0.0, "seconds": None,
             "quiet_band": quiet.levels(noisy)}]
    for method in [IdealRatioMask(target, noisy - target), *methods]:
        if isinstance(method, Skipped):
            rows.append({"method": method.name, "skipped": method.reason})
            continue
        started = time.perf_counter()
        try:
            output = np.atleast_2d(method.denoise(noisy.astype(np.float32), rate)).astype(np.float64)
        except Exception as error:  # one failing denoiser must not hide the others' scores
            log.warning("%s failed: %s", method.name, error)
            rows.append({"method": method.name, "skipped": f"failed ({error})"})
            continue
        seconds = time.perf_counter() - started
        scores = metrics.score(target, output, sample_rate=rate)
        rows.append({"method": method.name, **scores, "si_sdr_improvement_db": scores["si_sdr_db"] - base["si_sdr_db"],
                     "seconds": seconds, "quiet_band": quiet.levels(output)})
    return rows


class QuietBand:
    """The 1-5 kHz band in the quietest 30 % of frames of one example, on the metrics module's STFT."""

    def __init__(self, target: np.ndarray, noise: np.ndarray):
        from cassette_denoise import metrics

        self.target = target
        music = metrics.power_spectrogram(target)  # (channels, frames, bins)
        frame_power = music.sum(axis=(0, 2))
        self.frames = np.argsort(frame_power)[: max(1, int(QUIET_SHARE * frame_power.size))]
        freqs = np.fft.rfftfreq(metrics.LSD_N_FFT, 1 / _common.SAMPLE_RATE)
        self.bins = (freqs >= QUIET_BAND_HZ[0]) & (freqs < QUIET_BAND_HZ[1])
        self.music_dbfs, self.noise_dbfs = self._dbfs(music), self._dbfs(metrics.power_spectrogram(noise))

    def _dbfs(self, power: np.ndarray) -> float:
        from cassette_denoise import metrics

        # Parseval for a periodic Hann window (sum of squares 3N/8), one-sided: the band's mean square
        # is 2 Σ|X|² / (N · 3N/8); mean over channels and the chosen frames.
        band = power[:, self.frames][..., self.bins].sum(axis=-1)
        mean_square = np.mean(band) * 16 / (3 * metrics.LSD_N_FFT**2)
        return float(10 * np.log10(mean_square + 1e-30))

    def levels(self, output: np.ndarray) -> dict[str, float]:
        from cassette_denoise import metrics

        error_dbfs = self._dbfs(metrics.power_spectrogram(output - self.target))
        return {"music_dbfs": self.music_dbfs, "noise_dbfs": self.noise_dbfs, "error_dbfs": error_dbfs,
                "reduction_db": self.noise_dbfs - error_dbfs}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (family, SNR, method): the mean of each metric over the excerpts where the method was scored."""
    renamed = [{**row, "preset": row["family"]} for row in rows]
    summary = []
    for entry in quality.summarise(renamed):
        family = entry.pop("preset")
        members = [row for row in rows if (row["family"], row["snr_db"], row["method"]) ==
                   (family, entry["snr_db"], entry["method"]) and "quiet_band" in row]
        quiet = {key: float(np.mean([row["quiet_band"][key] for row in members]))
                 for key in ("music_dbfs", "noise_dbfs", "error_dbfs", "reduction_db")} if members else None
        summary.append({"family": family, **entry, "quiet_band": quiet})
    return summary


if __name__ == "__main__":
    sys.exit(main())
