"""Training pairs made on the fly: clean crops + the cassette simulator (+ recorded tape noise).

Nothing is pre-rendered: each example reads a random excerpt of a clean 44.1 kHz file, passes it
through a tape drawn from a simulator preset (:func:`cassette_denoise.simulate.sample_cassette`, plus
modulation-noise sidebands when asked for, then :func:`~cassette_denoise.simulate.apply_cassette`) and,
optionally, adds a random stretch of a user's blank-tape recording. Each data-loader worker draws
from its own generator seeded by ``(seed, rank, worker, start_step)``, so runs are reproducible and a
resumed run sees new examples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, AudioError, probe, read_audio, read_excerpt, resample
from cassette_denoise.simulate import PRESETS, ModulationSidebands, apply_cassette, sample_cassette
from cassette_denoise.simulate._dsp import (
    block_level_dbfs,
    block_size,
    db_to_gain,
    fft_filter,
    highpass_response,
    log_uniform,
    lowpass_response,
    upsample_blocks,
)

#: Extra audio simulated on each side of a crop so filters and echoes have settled inside it.
MARGIN_SAMPLES = 8192


@dataclass(frozen=True)
class PairConfig:
    crop_frames: int = 128
    #: The simulator preset, or several: each example then draws one entry with equal probability, so a
    #: name listed twice is drawn twice as often.
    preset: str | tuple[str, ...] = "training"
    #: Probability that a recorded blank-tape noise excerpt is added on top of the simulation.
    recorded_noise_probability: float = 0.5
    #: Music-to-recorded-noise ratio range, dB.
    recorded_noise_snr_db: tuple[float, float] = (0.0, 40.0)
    #: Probability that the clean music is band-limited before the tape, as a radio broadcast, an old
    #: recording or a lossy file is. Above such music's edge the tape adds hiss and nothing else, and
    #: the model has to learn to take all of it there (0 = never; older runs drew no such number).
    band_limit_probability: float = 0.0
    #: Range of the band limit's -3 dB corner, Hz, drawn log-uniformly; the low-pass falls 48 dB per octave.
    band_limit_hz: tuple[float, float] = (4000.0, 16000.0)
    #: Probability that all the tape's noise together (hiss, hum, rumble, echoes ...) is rescaled to a
    #: music-to-noise ratio drawn from ``noise_snr_db``. The presets set each noise in dBFS, so hum and
    #: rumble otherwise stay 30-60 dB under the music, and a model never learns to take them out of a
    #: tape where they, like the hiss, are only 10-20 dB down (0 = never; older runs drew no such number).
    noise_snr_probability: float = 0.0
    #: Range of that ratio, dB, drawn uniformly.
    noise_snr_db: tuple[float, float] = (0.0, 40.0)
    #: Probability that the tape also adds modulation-noise sidebands (``simulate.ModulationSidebands``)
    #: whatever the preset: the noise skirts around loud treble that come and go with the music above
    #: its upper edge (0 = never; older runs drew no such number).
    modulation_sidebands_probability: float = 0.0
    #: Probability that the clean music's quiet time-frequency cells are emptied before the tape: every STFT
    #: bin more than a drawn ``empty_bins_below_db`` under the crop's loudest (per channel) is set to zero,
    #: as in a noise-reduced or lossy digital master. The tape's hiss then lies over nothing there, which
    #: full-band renderings never show (0 = never; older runs drew no such number).
    empty_bins_probability: float = 0.0
    #: Range of that threshold, dB under the loudest bin, drawn uniformly.
    empty_bins_below_db: tuple[float, float] = (50.0, 80.0)
    #: Probability that an example keeps both channels of a stereo source, each track of the tape with
    #: its own hiss, for a model that sees the channels' coherence. Any value > 0 makes every example
    #: ``(2, samples)``, the channel to denoise first; the others are a mono mix or one channel, the same
    #: on both tracks as from a mono tape (0 = mono examples ``(samples,)``, as older runs drew).
    stereo_probability: float = 0.0
    #: Probability that the tape's noise above :data:`TREBLE_HZ` rises with each channel's own treble, by up
    #: to a drawn ``noise_follows_treble_db`` at the loudest moment: on a real transfer the noise above the
    #: music's edge comes and goes with every hi-hat (docs/MODEL_CARD.md, "Session 10"), so its level alone
    #: does not say it is noise; each track's is still its own (0 = never; older runs drew no such number).
    noise_follows_treble_probability: float = 0.0
    #: Range of that rise, dB, drawn uniformly.
    noise_follows_treble_db: tuple[float, float] = (2.0, 8.0)

    def __post_init__(self):
        names = (self.preset,) if isinstance(self.preset, str) else self.preset
        unknown = [name for name in names if name not in PRESETS]
        if not names or unknown:
            raise ValueError(f"preset must name one or more of {', '.join(PRESETS)}; got {self.preset!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be in [0, 1], got {value}")
        low, high = self.band_limit_hz
        if not 0.0 < low <= high < MODEL_SAMPLE_RATE / 2:
            raise ValueError(f"band_limit_hz must be 0 < low <= high < {MODEL_SAMPLE_RATE / 2:g}, got {self.band_limit_hz}")
        if not self.noise_snr_db[0] <= self.noise_snr_db[1]:
            raise ValueError(f"noise_snr_db must be (low, high) with low <= high, got {self.noise_snr_db}")
        if not 0.0 < self.empty_bins_below_db[0] <= self.empty_bins_below_db[1]:
            raise ValueError(f"empty_bins_below_db must be 0 < low <= high, got {self.empty_bins_below_db}")
        if not 0.0 <= self.noise_follows_treble_db[0] <= self.noise_follows_treble_db[1]:
            raise ValueError(f"noise_follows_treble_db must be 0 <= low <= high, got {self.noise_follows_treble_db}")

    @property
    def crop_samples(self) -> int:
        """Samples giving exactly ``crop_frames`` STFT frames without padding."""
        return (self.crop_frames - 1) * spectral.HOP + spectral.N_FFT


@dataclass(frozen=True)
class Source:
    path: Path
    frames: int


def scan_sources(paths: list[Path]) -> list[Source]:
    """Check clean files are 44.1 kHz and long enough to crop from; return them with their lengths."""
    sources = []
    for path in paths:
        info = probe(path)
        if info.sample_rate != MODEL_SAMPLE_RATE:
            raise AudioError(f"{path}: training sources must be {MODEL_SAMPLE_RATE} Hz, not {info.sample_rate} Hz "
                             "(build them with `cassette-denoise corpus`)")
        sources.append(Source(Path(path), info.frames))
    if not sources:
        raise AudioError("no clean training sources")
    return sources


def load_noise_recordings(paths: list[Path]) -> list[np.ndarray]:
    """Blank-tape recordings as 44.1 kHz float32 ``(channels, samples)``, zero-mean."""
    recordings = []
    for path in paths:
        audio, rate = read_audio(path)
        audio = resample(audio, rate, MODEL_SAMPLE_RATE)
        recordings.append(audio - audio.mean(axis=1, keepdims=True))
    return recordings


def make_example(
    sources: list[Source], noises: list[np.ndarray], config: PairConfig, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(noisy, target)`` pair, each float32 ``(crop_samples,)``, or ``(2, crop_samples)`` with
    ``config.stereo_probability`` (see there)."""
    weights = np.array([source.frames for source in sources], dtype=np.float64)
    source = sources[rng.choice(len(sources), p=weights / weights.sum())]
    length = config.crop_samples + 2 * MARGIN_SAMPLES
    start = int(rng.integers(0, max(1, source.frames - length)))
    clean = read_excerpt(source.path, start_frame=start, frames=length)
    stereo = bool(config.stereo_probability and rng.random() < config.stereo_probability and clean.shape[0] == 2)
    if stereo:
        clean = clean[::-1].copy() if rng.random() < 0.5 else clean  # either channel is the one to denoise
    else:
        # Mono examples: a random channel or the mid signal, so the model sees both wide and centred mixes.
        choice = int(rng.integers(0, clean.shape[0] + 1))
        clean = clean.mean(axis=0, keepdims=True) if choice == clean.shape[0] else clean[choice: choice + 1]
    if config.band_limit_probability and rng.random() < config.band_limit_probability:
        clean = band_limit(clean, corner_hz=log_uniform(rng, *config.band_limit_hz))
    if config.empty_bins_probability and rng.random() < config.empty_bins_probability:
        clean = empty_quiet_bins(clean, below_db=rng.uniform(*config.empty_bins_below_db))
    # A single preset draws nothing here, so runs made before mixtures existed replay exactly.
    preset = config.preset if isinstance(config.preset, str) else config.preset[int(rng.integers(len(config.preset)))]
    tape = sample_cassette(rng, preset)
    if config.modulation_sidebands_probability and rng.random() < config.modulation_sidebands_probability:
        tape = dataclasses.replace(tape, modulation_sidebands=ModulationSidebands.sample_params(rng))
    result = apply_cassette(clean, MODEL_SAMPLE_RATE, tape)
    noisy, target = result.noisy, result.target  # (channels, samples)
    if noises and rng.random() < config.recorded_noise_probability:
        noisy = noisy + np.stack([_recorded_noise(noises, channel, length, config, rng) for channel in target])
    if config.noise_follows_treble_probability and rng.random() < config.noise_follows_treble_probability:
        noisy = target + noise_following_treble(noisy - target, target, rise_db=rng.uniform(*config.noise_follows_treble_db))
    crop = slice(MARGIN_SAMPLES, MARGIN_SAMPLES + config.crop_samples)
    if config.noise_snr_probability and rng.random() < config.noise_snr_probability:
        noisy = target + rescaled_noise(noisy[:, crop] - target[:, crop], noisy - target, target[:, crop],
                                        snr_db=rng.uniform(*config.noise_snr_db))
    noisy, target = noisy[:, crop].astype(np.float32), target[:, crop].astype(np.float32)
    if not config.stereo_probability:
        return noisy[0], target[0]
    # A mono example fills both tracks alike: a mono tape copied to two channels (coherence 1 throughout).
    return np.broadcast_to(noisy, (2, noisy.shape[1])).copy(), np.broadcast_to(target, (2, target.shape[1])).copy()


def band_limit(audio: np.ndarray, *, corner_hz: float) -> np.ndarray:
    """Zero-phase 8th-order Butterworth low-pass of 44.1 kHz ``(channels, samples)`` audio, -3 dB at ``corner_hz``."""
    return fft_filter(audio, MODEL_SAMPLE_RATE, lambda freqs_hz: lowpass_response(freqs_hz, corner_hz, order=8))


def empty_quiet_bins(audio: np.ndarray, *, below_db: float) -> np.ndarray:
    """``audio`` ``(channels, samples)`` with every STFT bin more than ``below_db`` under its channel's
    loudest set to zero (the project's STFT, resynthesised by overlap-add); same shape, float32."""
    samples = audio.shape[-1]
    frames = spectral.frame_count(samples)
    needed = (frames - 1) * spectral.HOP + spectral.N_FFT
    padded = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                                     (spectral.pad_amount(), needed - samples - spectral.pad_amount()))
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


def rescaled_noise(measured_noise: np.ndarray, noise: np.ndarray, measured_music: np.ndarray, *,
                   snr_db: float) -> np.ndarray:
    """``noise`` times the gain that puts ``measured_noise`` ``snr_db`` under ``measured_music`` (RMS ratio).

    Silent music or no noise leaves ``noise`` as it is: there is no ratio to set.
    """
    music_power, noise_power = float(np.mean(measured_music**2)), float(np.mean(measured_noise**2))
    if music_power <= 0.0 or noise_power <= 0.0:
        return noise
    return noise * np.float32(np.sqrt(music_power / noise_power * 10 ** (-snr_db / 10)))


def _recorded_noise(noises, target, length, config, rng) -> np.ndarray:
    recording = noises[int(rng.integers(len(noises)))]
    channel = recording[int(rng.integers(recording.shape[0]))]
    # Loop short recordings; start at a random offset so examples differ.
    repeats = -(-(length + channel.size) // channel.size)
    offset = int(rng.integers(channel.size))
    noise = np.tile(channel, repeats)[offset: offset + length]
    music_rms = np.sqrt(np.mean(target**2)) + 1e-9
    noise_rms = np.sqrt(np.mean(noise**2)) + 1e-12
    snr_db = rng.uniform(*config.recorded_noise_snr_db)
    return noise * (music_rms / noise_rms * 10 ** (-snr_db / 20))


class TrainingPairs(IterableDataset):
    """Endless stream of ``(noisy, target)`` float32 tensors shaped as :func:`make_example`'s."""

    def __init__(self, sources: list[Source], *, config: PairConfig, seed: int, rank: int = 0,
                 start_step: int = 0, noises: list[np.ndarray] | None = None):
        self.sources, self.config, self.noises = sources, config, noises or []
        self.seed, self.rank, self.start_step = seed, rank, start_step

    def __iter__(self):
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, self.rank, worker.id if worker else 0, self.start_step])
        while True:
            noisy, target = make_example(self.sources, self.noises, self.config, rng)
            yield torch.from_numpy(noisy), torch.from_numpy(target)


def fixed_examples(sources: list[Source], *, config: PairConfig, count: int, seed: int,
                   noises: list[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible set of pairs (validation/test), ``(count, crop_samples)`` (or ``(count, 2, crop_samples)``) each."""
    rng = np.random.default_rng(seed)
    pairs = [make_example(sources, noises or [], config, rng) for _ in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))
