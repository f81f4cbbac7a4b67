"""Additive tape noises: what a denoiser must remove.

Each degradation has ``sample_params(rng, ...) -> params`` (keyword options are ``(low, high)`` ranges)
and ``noise(x, sample_rate, params) -> (channels, samples)``, the noise that would ride on the
signal ``x`` (``(channels, samples)`` float32); ``apply`` returns ``x + noise``. Noise waveforms come
from the ``seed`` stored in the params, so both are pure functions of their arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cassette_denoise.simulate._dsp import (
    DOLBY_B_CORNER_HZ,
    Range,
    block_level_dbfs,
    block_rms,
    block_size,
    db_to_gain,
    dolby_b_boost_db,
    draw_seed,
    first_order_split,
    highpass_response,
    log_uniform,
    lowpass_response,
    rms,
    shaped_noise,
    shelf_response,
    upsample_blocks,
)

LEVEL_REFERENCES = ("dbfs", "snr")


class AdditiveNoise:
    """Base class: ``apply`` adds the noise to the signal it is computed from."""

    @classmethod
    def apply(cls, x: np.ndarray, sample_rate: int, params) -> np.ndarray:
        return x + cls.noise(x, sample_rate, params)

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class HissParams:
    """Tape hiss: white noise through the playback EQ and the deck's high-frequency loss.

    ``level_db`` is the hiss RMS of each channel before any Dolby B decoding; it is in dBFS when
    ``level_reference == "dbfs"``, and a signal-to-hiss ratio in dB re the RMS of the signal the hiss is
    added to (all channels together) when ``level_reference == "snr"``.
    """

    level_db: float
    level_reference: str
    turnover_hz: float  # playback-EQ turnover: 1.33 kHz for 120 us (Type I), 2.27 kHz for 70 us (Type II)
    shelf_db: float  # how far the hiss rises above the turnover
    lowpass_hz: float  # -3 dB corner of the head/deck high-frequency loss
    dolby_b: bool  # Dolby B decoding: up to 10 dB less hiss above ~1 kHz in quiet passages
    seed: int

    def __post_init__(self):
        if self.level_reference not in LEVEL_REFERENCES:
            raise ValueError(f"level_reference {self.level_reference!r} is not one of {LEVEL_REFERENCES}")


class Hiss(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        level_dbfs: Range = (-75.0, -40.0),
        snr_db: Range = (0.0, 35.0),
        snr_probability: float = 0.0,
        turnover_hz: Range = (1300.0, 2300.0),
        shelf_db: Range = (6.0, 12.0),
        lowpass_hz: Range = (10_000.0, 18_000.0),
        dolby_b_probability: float = 0.0,
    ) -> HissParams:
        relative = bool(rng.random() < snr_probability)
        return HissParams(
            level_db=rng.uniform(*(snr_db if relative else level_dbfs)),
            level_reference="snr" if relative else "dbfs",
            turnover_hz=rng.uniform(*turnover_hz),
            shelf_db=rng.uniform(*shelf_db),
            lowpass_hz=rng.uniform(*lowpass_hz),
            dolby_b=bool(rng.random() < dolby_b_probability),
            seed=draw_seed(rng),
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: HissParams) -> np.ndarray:
        channels, samples = x.shape
        if params.level_reference == "dbfs":
            level = db_to_gain(params.level_db)
        else:
            level = rms(x) * db_to_gain(-params.level_db)
        hiss = shaped_noise(
            np.random.default_rng(params.seed), channels, samples, sample_rate,
            lambda f: shelf_response(f, params.turnover_hz, params.shelf_db) * lowpass_response(f, params.lowpass_hz),
        )
        hiss *= np.float32(level)
        if params.dolby_b:
            # The decoder cuts its high band by as much as the encoder boosted it, which depends on
            # how loud the music's high band is: full 10 dB in quiet passages, none in loud ones.
            block = block_size(sample_rate)
            _, music_high = first_order_split(x, sample_rate, DOLBY_B_CORNER_HZ)
            cut = db_to_gain(-dolby_b_boost_db(block_level_dbfs(music_high, block)))
            _, hiss_high = first_order_split(hiss, sample_rate, DOLBY_B_CORNER_HZ)
            hiss += (upsample_blocks(cut, block, samples) - 1.0) * hiss_high
        return hiss


@dataclass(frozen=True)
class ModulationNoiseParams:
    """Noise that rides on the signal: its RMS follows each channel's envelope, so that a full-scale
    envelope raises the noise floor ``floor_dbfs`` by ``rise_db``."""

    rise_db: float
    floor_dbfs: float
    seed: int


class ModulationNoise(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, rise_db: Range = (0.0, 15.0), floor_dbfs: Range = (-75.0, -40.0)
    ) -> ModulationNoiseParams:
        return ModulationNoiseParams(
            rise_db=rng.uniform(*rise_db), floor_dbfs=rng.uniform(*floor_dbfs), seed=draw_seed(rng)
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: ModulationNoiseParams) -> np.ndarray:
        block = block_size(sample_rate)
        # sqrt(2) * RMS: a full-scale sine has envelope 1. Powers add, so the extra noise needed to
        # lift the floor by rise_db at envelope 1 is floor * sqrt(10^(rise/10) - 1).
        envelope = upsample_blocks(np.sqrt(2.0) * block_rms(x, block), block, x.shape[1])
        scale = db_to_gain(params.floor_dbfs) * np.sqrt(10.0 ** (params.rise_db / 10.0) - 1.0)
        # Unit-variance uniform noise: its spectrum is as white as Gaussian noise and its short-time
        # statistics are dominated by the envelope anyway, at a tenth of the cost to draw.
        carrier = np.random.default_rng(params.seed).random(x.shape, dtype=np.float32) - np.float32(0.5)
        return carrier * envelope * np.float32(scale * np.sqrt(12.0))


@dataclass(frozen=True)
class ModulationSidebandsParams:
    """Modulation noise as it sits in the spectrum: the signal times a small random gain that moves
    faster than the music, ``x * (1 + e(t))``. Every component of the music then carries a skirt of
    noise up to ``bandwidth_hz`` either side of it, ``level_db`` (the RMS of ``e``) under it. Below the
    music's upper edge the skirts hide under the music; around a cymbal or hi-hat near that edge they
    reach above it, as bursts of noise that come and go with the music's treble (seen on a real
    transfer: the noise above its 10 kHz edge rises by up to 3 dB with each hit, see docs/real-excerpt.md, "How the noise moves")."""

    level_db: float
    bandwidth_hz: float
    seed: int


class ModulationSidebands(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, level_db: Range = (-45.0, -25.0), bandwidth_hz: Range = (1000.0, 5000.0)
    ) -> ModulationSidebandsParams:
        return ModulationSidebandsParams(
            level_db=rng.uniform(*level_db), bandwidth_hz=log_uniform(rng, *bandwidth_hz), seed=draw_seed(rng)
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: ModulationSidebandsParams) -> np.ndarray:
        # Each track crosses its own stretch of tape coating, so each channel gets its own gain noise.
        gain = shaped_noise(
            np.random.default_rng(params.seed), x.shape[0], x.shape[1], sample_rate,
            lambda f: lowpass_response(f, params.bandwidth_hz, order=4),
        )
        return x * gain * np.float32(db_to_gain(params.level_db))


@dataclass(frozen=True)
class HumParams:
    """Mains hum: harmonics 1, 2, ... of ``mains_hz``; ``level_dbfs`` is the RMS of their sum."""

    mains_hz: float
    level_dbfs: float
    harmonics_db: tuple[float, ...]  # level of each harmonic re the fundamental (first entry 0 dB)
    phases_rad: tuple[float, ...]

    def __post_init__(self):
        if len(self.harmonics_db) != len(self.phases_rad):
            raise ValueError(f"{len(self.harmonics_db)} harmonic levels but {len(self.phases_rad)} phases")


class Hum(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        mains_hz: tuple[float, ...] = (50.0, 60.0),
        level_dbfs: Range = (-80.0, -50.0),
        harmonics: int = 5,
        odd_harmonics_db: Range = (-6.0, 10.0),  # 3rd and 5th are often stronger than the fundamental
        even_harmonics_db: Range = (-20.0, -3.0),
    ) -> HumParams:
        levels = [0.0] + [
            rng.uniform(*(odd_harmonics_db if k % 2 else even_harmonics_db)) for k in range(2, harmonics + 1)
        ]
        return HumParams(
            mains_hz=float(rng.choice(mains_hz)),
            level_dbfs=rng.uniform(*level_dbfs),
            harmonics_db=tuple(levels),
            phases_rad=tuple(rng.uniform(0.0, 2 * np.pi, harmonics).tolist()),
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: HumParams) -> np.ndarray:
        samples = x.shape[1]
        # Reduce the phase to one cycle in float64 first: float32 time would drift on long files.
        cycles = np.arange(samples, dtype=np.float64) * (params.mains_hz / sample_rate)
        phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
        orders = np.arange(1, len(params.harmonics_db) + 1)
        audible = orders * params.mains_hz < sample_rate / 2
        amplitudes = db_to_gain(np.asarray(params.harmonics_db))[audible]
        amplitudes *= db_to_gain(params.level_dbfs) / np.sqrt(np.sum(amplitudes**2) / 2)
        hum = np.zeros(samples, np.float32)
        for order, amplitude, offset in zip(orders[audible], amplitudes, np.asarray(params.phases_rad)[audible]):
            hum += np.float32(amplitude) * np.sin(np.float32(order) * phase + np.float32(offset))
        # Hum enters after the heads (cables, ground loops), so it is the same on every channel.
        return np.broadcast_to(hum, x.shape)


@dataclass(frozen=True)
class RumbleParams:
    """Motor and transport noise below ``corner_hz``; ``level_dbfs`` is its RMS."""

    level_dbfs: float
    corner_hz: float
    seed: int


class Rumble(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, level_dbfs: Range = (-80.0, -55.0), corner_hz: Range = (20.0, 100.0)
    ) -> RumbleParams:
        return RumbleParams(level_dbfs=rng.uniform(*level_dbfs), corner_hz=rng.uniform(*corner_hz), seed=draw_seed(rng))

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: RumbleParams) -> np.ndarray:
        # 5 Hz high-pass: mechanical noise, not a DC drift; steep low-pass so nothing leaks above the corner.
        rumble = shaped_noise(
            np.random.default_rng(params.seed), 1, x.shape[1], sample_rate,
            lambda f: highpass_response(f, 5.0) * lowpass_response(f, params.corner_hz, order=4),
        )
        # The transport shakes the whole tape, so both tracks carry the same rumble.
        return np.broadcast_to(rumble * np.float32(db_to_gain(params.level_dbfs)), x.shape)


@dataclass(frozen=True)
class PrintThroughParams:
    """Magnetic print-through from the neighbouring tape layers: faint copies of the signal one tape
    revolution (``delay_s``) before and after it."""

    delay_s: float
    pre_echo_db: float
    post_echo_db: float


class PrintThrough(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, delay_s: Range = (1.0, 2.0), echo_db: Range = (-60.0, -40.0)
    ) -> PrintThroughParams:
        return PrintThroughParams(
            delay_s=rng.uniform(*delay_s), pre_echo_db=rng.uniform(*echo_db), post_echo_db=rng.uniform(*echo_db)
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: PrintThroughParams) -> np.ndarray:
        delay = round(params.delay_s * sample_rate)
        echo = np.zeros_like(x)
        if 0 < delay < x.shape[1]:
            echo[:, delay:] += np.float32(db_to_gain(params.post_echo_db)) * x[:, :-delay]
            echo[:, :-delay] += np.float32(db_to_gain(params.pre_echo_db)) * x[:, delay:]
        return echo


@dataclass(frozen=True)
class ClicksParams:
    """Short decaying bursts at random times (``rate_per_s`` on average); ``level_dbfs`` is the peak
    of the loudest ones (each click draws 0.1-1 times that)."""

    rate_per_s: float
    level_dbfs: float
    seed: int


class Clicks(AdditiveNoise):
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, rate_per_s: Range = (0.1, 3.0), level_dbfs: Range = (-40.0, -10.0)
    ) -> ClicksParams:
        return ClicksParams(
            rate_per_s=rng.uniform(*rate_per_s), level_dbfs=rng.uniform(*level_dbfs), seed=draw_seed(rng)
        )

    @staticmethod
    def noise(x: np.ndarray, sample_rate: int, params: ClicksParams) -> np.ndarray:
        rng = np.random.default_rng(params.seed)
        channels, samples = x.shape
        clicks = np.zeros_like(x)
        shortest, longest = max(2, round(1e-4 * sample_rate)), max(3, round(1e-3 * sample_rate))
        for _ in range(rng.poisson(params.rate_per_s * samples / sample_rate)):
            length = int(rng.integers(shortest, longest + 1))
            start = int(rng.integers(0, max(1, samples - length)))
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.25 * length))
            burst *= db_to_gain(params.level_dbfs) * rng.uniform(0.1, 1.0) / np.max(np.abs(burst))
            # Most clicks are on both tracks (splices, static); some only on one (a crease at the edge).
            channel = slice(None) if rng.random() < 0.7 else int(rng.integers(channels))
            clicks[channel, start : start + length] += burst[: samples - start].astype(np.float32)
        return clicks
