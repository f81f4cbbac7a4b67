"""Training examples made on the fly: clean crops + the cassette simulator (+ recorded tape noise).

Nothing is pre-rendered: each example reads a random excerpt of a clean 44.1 kHz file, may empty its
quietest STFT cells, passes it through a tape drawn from a simulator preset
(:func:`cassette_denoise.simulate.sample_cassette`, plus modulation-noise sidebands when drawn, then
:func:`~cassette_denoise.simulate.apply_cassette`), optionally adds a random stretch of a user's
blank-tape recording, may let the noise's treble follow the music's, and may set the whole noise to a
drawn ratio under the music. Each data-loader worker draws from its own generator seeded by
``(seed, rank, worker, start_step)``, so runs are reproducible and a resumed run sees new examples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, AudioError, probe, read_excerpt, read_resampled
from cassette_denoise.simulate import PRESETS, ModulationSidebands, apply_cassette, sample_cassette
from cassette_denoise.simulate.families import FAMILIES, family_noise, sample_family
from cassette_denoise.simulate._dsp import (
    block_level_dbfs,
    block_size,
    db_to_gain,
    fft_filter,
    highpass_response,
    upsample_blocks,
)

#: Every simulator preset, each drawn equally often: one tape's noise is not every tape's.
ALL_PRESETS = ("training", "random", "good-deck-type-ii", "walkman-ferric", "worn-tape", "dolby-b-undecoded")

#: Extra audio simulated on each side of a crop so filters and echoes have settled inside it.
MARGIN_SAMPLES = 8192


@dataclass(frozen=True)
class PairConfig:
    """What goes into each example; the defaults are the first stage of the bundled model's recipe.

    Each ``*_probability`` is the share of examples that get that treatment; each range is drawn
    uniformly per example.
    """

    #: The simulator preset, or several: each example then draws one entry with equal probability, so a
    #: name listed twice is drawn twice as often.
    preset: str | tuple[str, ...] = ALL_PRESETS
    #: Share of examples that get a recorded blank-tape noise excerpt on top of the simulation (when the
    #: run has recordings), at a music-to-recorded-noise ratio in ``recorded_noise_snr_db``.
    recorded_noise_probability: float = 0.5
    recorded_noise_snr_db: tuple[float, float] = (0.0, 40.0)
    #: Share of examples (when the run has recordings) whose only noise is a recorded excerpt, over the
    #: clean music itself at a ratio in ``recorded_noise_snr_db``: a model adapted to one deck learns
    #: that deck's noise as it is, not under the simulator's.
    recorded_noise_alone_probability: float = 0.0
    #: Share of examples whose whole tape noise (hiss, hum, rumble, echoes ...) is rescaled to a
    #: music-to-noise ratio in ``noise_snr_db``. The presets set each noise in dBFS, so hum and rumble
    #: otherwise stay 30-60 dB under the music, and a model never learns to take them out of a tape where
    #: they, like the hiss, are only 10-20 dB down.
    noise_snr_probability: float = 0.5
    noise_snr_db: tuple[float, float] = (0.0, 40.0)
    #: Share of examples whose tape also adds modulation-noise sidebands (``simulate.ModulationSidebands``)
    #: whatever the preset: the noise skirts around loud treble that come and go with the music.
    modulation_sidebands_probability: float = 0.0
    #: Share of examples whose clean music has every STFT cell more than a drawn ``empty_bins_below_db``
    #: under the crop's loudest emptied first, as in a noise-reduced or lossy digital master: the tape's
    #: hiss then lies over nothing there, which full-band renderings never show.
    empty_bins_probability: float = 0.0
    empty_bins_below_db: tuple[float, float] = (50.0, 80.0)
    #: Share of examples whose noise above :data:`TREBLE_HZ` rises with the music's treble, by a drawn
    #: ``noise_follows_treble_db`` at the loudest moment: on a real transfer the noise above the music's
    #: edge comes and goes with every hi-hat, so its level alone does not say it is noise.
    noise_follows_treble_probability: float = 0.0
    noise_follows_treble_db: tuple[float, float] = (2.0, 8.0)
    #: Share of examples whose noise comes from a noise family (:mod:`cassette_denoise.simulate.families`)
    #: instead of the simulator, over the clean music itself, at a music-to-noise ratio in
    #: ``noise_family_snr_db``: floors of every colour, off-speed hum, whines, rumble and modulation
    #: noise, so that the model does not learn one deck's noise.
    noise_family_probability: float = 0.0
    #: The family, or several drawn with equal probability (names of ``FAMILIES``).
    noise_family: str | tuple[str, ...] = "broad"
    noise_family_snr_db: tuple[float, float] = (0.0, 40.0)

    def __post_init__(self):
        names = (self.preset,) if isinstance(self.preset, str) else self.preset
        unknown = [name for name in names if name not in PRESETS]
        if not names or unknown:
            raise ValueError(f"preset must name one or more of {', '.join(PRESETS)}; got {self.preset!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {value}")
        families = (self.noise_family,) if isinstance(self.noise_family, str) else self.noise_family
        unknown = [name for name in families if name not in FAMILIES]
        if not families or unknown:
            raise ValueError(f"noise_family must name one or more of {', '.join(FAMILIES)}; got {self.noise_family!r}")
        for name in ("recorded_noise_snr_db", "noise_snr_db", "empty_bins_below_db", "noise_follows_treble_db",
                     "noise_family_snr_db"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")
        if self.empty_bins_below_db[0] <= 0.0:
            raise ValueError(f"empty_bins_below_db must be 0 < low <= high, got {self.empty_bins_below_db}")
        if self.noise_follows_treble_db[0] < 0.0:
            raise ValueError(f"noise_follows_treble_db must be 0 <= low <= high, got {self.noise_follows_treble_db}")


def crop_samples(frames: int) -> int:
    """Samples giving exactly ``frames`` STFT frames without padding."""
    return (frames - 1) * spectral.HOP + spectral.N_FFT


@dataclass(frozen=True)
class Source:
    path: Path
    frames: int


def scan_sources(paths: list[Path], *, split: str, origin: str = "corpus") -> list[Source]:
    """Check the clean files of ``split`` are 44.1 kHz; return them with their lengths. ``origin`` (the
    corpus folder) names where they came from in the error for an empty split.

    Raises:
        AudioError: a file at another rate, or no files at all (the message names the split).
    """
    sources = []
    for path in paths:
        info = probe(path)
        if info.sample_rate != MODEL_SAMPLE_RATE:
            raise AudioError(f"{path}: training sources must be {MODEL_SAMPLE_RATE} Hz, not {info.sample_rate} Hz "
                             "(build them with `cassette-denoise corpus`)")
        sources.append(Source(Path(path), info.frames))
    if not sources:
        raise AudioError(f"{origin}: no clean {split} files (a corpus needs both train and validation music; "
                         "build one with `cassette-denoise corpus`)")
    return sources


def load_noise_recordings(paths: list[Path]) -> list[np.ndarray]:
    """Blank-tape recordings as 44.1 kHz float32 ``(channels, samples)``, zero-mean."""
    recordings = [read_resampled(path)[0] for path in paths]
    return [audio - audio.mean(axis=1, keepdims=True) for audio in recordings]


def make_example(sources: list[Source], noises: list[np.ndarray], config: PairConfig, rng: np.random.Generator,
                 *, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(noisy, target)`` pair, each float32 ``(crop_samples(frames),)``."""
    weights = np.array([source.frames for source in sources], dtype=np.float64)
    source = sources[rng.choice(len(sources), p=weights / weights.sum())]
    samples = crop_samples(frames)
    length = samples + 2 * MARGIN_SAMPLES
    start = int(rng.integers(0, max(1, source.frames - length)))
    clean = read_excerpt(source.path, start_frame=start, frames=length)
    # A random channel or the mid signal, so the model sees both wide and centred mixes.
    choice = int(rng.integers(0, clean.shape[0] + 1))
    clean = clean.mean(axis=0, keepdims=True) if choice == clean.shape[0] else clean[choice: choice + 1]
    if config.empty_bins_probability and rng.random() < config.empty_bins_probability:
        clean = empty_quiet_bins(clean, below_db=rng.uniform(*config.empty_bins_below_db))
    crop = slice(MARGIN_SAMPLES, MARGIN_SAMPLES + samples)
    if config.noise_family_probability and rng.random() < config.noise_family_probability:
        return family_example(clean[:, crop], config, rng)
    if noises and config.recorded_noise_alone_probability and rng.random() < config.recorded_noise_alone_probability:
        return recorded_example(clean[:, crop], noises, config, rng)
    # A single preset draws nothing here, so its examples do not depend on how many presets exist.
    preset = config.preset if isinstance(config.preset, str) else config.preset[int(rng.integers(len(config.preset)))]
    tape = sample_cassette(rng, preset)
    if config.modulation_sidebands_probability and rng.random() < config.modulation_sidebands_probability:
        tape = dataclasses.replace(tape, modulation_sidebands=ModulationSidebands.sample_params(rng))
    result = apply_cassette(clean, MODEL_SAMPLE_RATE, tape)
    noisy, target = result.noisy, result.target  # (1, length)
    if noises and rng.random() < config.recorded_noise_probability:
        noise = recorded_noise(noises, length, rng)
        noisy = noisy + noise * np.float32(snr_gain(target, noise, snr_db=rng.uniform(*config.recorded_noise_snr_db)))
    if config.noise_follows_treble_probability and rng.random() < config.noise_follows_treble_probability:
        noisy = target + noise_following_treble(noisy - target, target, rise_db=rng.uniform(*config.noise_follows_treble_db))
    if config.noise_snr_probability and rng.random() < config.noise_snr_probability:
        # The ratio is set over the crop the model sees; the margins follow with the same gain.
        gain = snr_gain(target[:, crop], noisy[:, crop] - target[:, crop], snr_db=rng.uniform(*config.noise_snr_db))
        noisy = target + (noisy - target) * np.float32(gain)
    return noisy[0, crop].astype(np.float32), target[0, crop].astype(np.float32)


def family_example(clean: np.ndarray, config: PairConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``clean`` ``(1, samples)`` plus the noise of a drawn family at a drawn ratio: ``(noisy, target)``,
    each float32 ``(samples,)``. The music itself is the target: the family's noise is all there is to take out."""
    names = config.noise_family
    family = names if isinstance(names, str) else names[int(rng.integers(len(names)))]
    noise = family_noise(clean, MODEL_SAMPLE_RATE, sample_family(rng, family))
    gain = snr_gain(clean, noise, snr_db=rng.uniform(*config.noise_family_snr_db))
    return (clean + noise * np.float32(gain))[0].astype(np.float32), clean[0].astype(np.float32)


def recorded_example(clean: np.ndarray, noises: list[np.ndarray], config: PairConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``clean`` ``(1, samples)`` plus a recorded noise excerpt at a drawn ratio: ``(noisy, target)``, each
    float32 ``(samples,)``, the music itself the target."""
    noise = recorded_noise(noises, clean.shape[-1], rng)
    gain = snr_gain(clean, noise, snr_db=rng.uniform(*config.recorded_noise_snr_db))
    return (clean + noise * np.float32(gain))[0].astype(np.float32), clean[0].astype(np.float32)


def snr_gain(music: np.ndarray, noise: np.ndarray, *, snr_db: float) -> float:
    """The gain that puts ``noise`` ``snr_db`` under ``music`` (ratio of mean powers).

    Silent music or no noise gives 1: there is no ratio to set.
    """
    music_power, noise_power = float(np.mean(music**2)), float(np.mean(noise**2))
    if music_power <= 0.0 or noise_power <= 0.0:
        return 1.0
    return float(np.sqrt(music_power / noise_power * 10 ** (-snr_db / 10)))


def recorded_noise(noises: list[np.ndarray], samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(1, samples)`` of one channel of a random recording, from a random offset, looped where it is short."""
    recording = noises[int(rng.integers(len(noises)))]
    channel = recording[int(rng.integers(recording.shape[0]))]
    offset = int(rng.integers(channel.size))
    return np.take(channel, np.arange(offset, offset + samples), mode="wrap")[None]


def empty_quiet_bins(audio: np.ndarray, *, below_db: float) -> np.ndarray:
    """``audio`` ``(channels, samples)`` with every STFT bin more than ``below_db`` under its channel's
    loudest set to zero (the project's STFT, resynthesised by overlap-add); same shape, float32."""
    samples = audio.shape[-1]
    padded = spectral.pad_signal(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
    spectra = spectral.stft(padded)  # (channels, bins, frames)
    magnitude = spectra.abs()
    loudest = magnitude.amax(dim=(-2, -1), keepdim=True)
    spectra = torch.where(magnitude >= loudest * 10 ** (-below_db / 20), spectra, 0)
    summed, envelope = spectral.istft_frames(spectra)
    start = spectral.pad_amount()
    return (summed[..., start: start + samples] / envelope[start: start + samples]).numpy()


#: Where :func:`noise_following_treble` looks for treble and lets the noise follow it, Hz.
TREBLE_HZ = 4000.0
#: How far under a channel's loudest treble the noise still rises with it, dB.
TREBLE_RANGE_DB = 30.0


def noise_following_treble(noise: np.ndarray, music: np.ndarray, *, rise_db: float) -> np.ndarray:
    """``noise`` with its part above :data:`TREBLE_HZ` raised where ``music``'s treble is loud, per channel.

    The gain (blocks of ``simulate``'s envelope block, interpolated) is ``rise_db`` where a channel's
    treble is at its loudest, falling linearly in dB to 0 dB at :data:`TREBLE_RANGE_DB` under that and
    below (and where the treble is under -100 dBFS); the noise below ``TREBLE_HZ`` (hum, rumble) is
    untouched. Both arrays are 44.1 kHz ``(channels, samples)``.
    """
    def treble(audio: np.ndarray) -> np.ndarray:
        return fft_filter(audio, MODEL_SAMPLE_RATE, lambda freqs_hz: highpass_response(freqs_hz, TREBLE_HZ, order=4))

    block = block_size(MODEL_SAMPLE_RATE)
    level_db = block_level_dbfs(treble(music), block)
    share = np.clip(1.0 + (level_db - level_db.max(axis=-1, keepdims=True)) / TREBLE_RANGE_DB, 0.0, 1.0)
    share[level_db < -100.0] = 0.0  # digital silence has no treble to follow
    gain = upsample_blocks(db_to_gain(rise_db * share).astype(np.float32), block, noise.shape[-1])
    return noise + (gain - 1.0) * treble(noise)


class TrainingPairs(IterableDataset):
    """Endless stream of ``(noisy, target)`` float32 tensors ``(crop_samples(frames),)``."""

    def __init__(self, sources: list[Source], *, config: PairConfig, frames: int, seed: int, rank: int = 0,
                 start_step: int = 0, noises: list[np.ndarray] | None = None):
        self.sources, self.config, self.frames, self.noises = sources, config, frames, noises or []
        self.seed, self.rank, self.start_step = seed, rank, start_step

    def __iter__(self):
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, self.rank, worker.id if worker else 0, self.start_step])
        while True:
            noisy, target = make_example(self.sources, self.noises, self.config, rng, frames=self.frames)
            yield torch.from_numpy(noisy), torch.from_numpy(target)


def fixed_examples(sources: list[Source], *, config: PairConfig, frames: int, count: int, seed: int,
                   noises: list[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible set of pairs (validation/test): noisy and target, each ``(count, crop_samples(frames))``."""
    rng = np.random.default_rng(seed)
    pairs = [make_example(sources, noises or [], config, rng, frames=frames) for _ in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))
