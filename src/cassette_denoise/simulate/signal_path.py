"""The tape's signal path: what happens to the music itself (and stays in the training target).

Each degradation has ``sample_params(rng, ...) -> params`` (keyword options are ``(low, high)`` ranges)
and a deterministic ``apply(x, sample_rate, params) -> y`` on float32 ``(channels, samples)``; the
output has the input's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

from cassette_denoise.simulate._dsp import (
    DOLBY_B_CORNER_HZ,
    Range,
    block_level_dbfs,
    block_size,
    db_to_gain,
    dolby_b_boost_db,
    fft_filter,
    first_order_split,
    lfilter32,
    log_uniform,
    lowpass_response,
    upsample_blocks,
)

DOLBY_B_MODES = ("undecoded", "mistracked")


@dataclass(frozen=True)
class SpeedParams:
    """Transport speed: a constant error plus wow and flutter, each a sinusoidal speed deviation whose
    RMS is given in percent (their combined RMS is the wow-and-flutter figure)."""

    offset_percent: float
    wow_percent: float
    wow_hz: float
    flutter_percent: float
    flutter_hz: float
    phases_rad: tuple[float, float]  # wow, flutter


class Speed:
    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        offset_percent: Range = (-2.0, 2.0),
        wow_flutter_percent: Range = (0.02, 0.3),
        wow_hz: Range = (0.5, 4.0),
        flutter_hz: Range = (4.0, 60.0),
    ) -> SpeedParams:
        total = log_uniform(rng, *wow_flutter_percent)
        flutter_share = rng.uniform(0.1, 0.9)  # of the variance
        return SpeedParams(
            offset_percent=rng.uniform(*offset_percent),
            wow_percent=float(total * np.sqrt(1.0 - flutter_share)),
            wow_hz=log_uniform(rng, *wow_hz),
            flutter_percent=float(total * np.sqrt(flutter_share)),
            flutter_hz=log_uniform(rng, *flutter_hz),
            phases_rad=tuple(rng.uniform(0.0, 2 * np.pi, 2).tolist()),
        )

    @staticmethod
    def apply(x: np.ndarray, sample_rate: int, params: SpeedParams) -> np.ndarray:
        """Play back at the varying speed: output sample n reads the tape at time ``read(n)``.

        ``read`` starts at 0, so the output starts in sync with the input; where a fast tape runs out
        before the end the output is silent.
        """
        samples = np.arange(x.shape[1], dtype=np.float64)
        read = samples * (1.0 + params.offset_percent / 100.0)
        components = ((params.wow_percent, params.wow_hz), (params.flutter_percent, params.flutter_hz))
        for (percent, hz), phase in zip(components, params.phases_rad):
            # Speed 1 + a cos(2 pi f t + phase) integrates to this read position (a = sqrt(2) * RMS).
            # The phase is reduced to one cycle in double precision, the sine taken in single.
            amplitude = np.sqrt(2.0) * percent / 100.0 * sample_rate / (2 * np.pi * hz)
            cycles = samples * (hz / sample_rate)
            cycles = (cycles - np.floor(cycles)).astype(np.float32)
            read += amplitude * (np.sin(np.float32(2 * np.pi) * cycles + np.float32(phase)) - np.sin(phase))
        return read_at(x, read)


def read_at(x: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Catmull-Rom interpolation of ``(channels, samples)`` at fractional sample ``position`` ``(n,)``;
    zero outside the signal. Returns ``(channels, n)``."""
    channels, samples = x.shape
    # Two zeros before and three after: every 4-tap neighbourhood of a clipped position is in range.
    padded = np.zeros((channels, samples + 5), np.float32)
    padded[:, 2 : samples + 2] = x
    position = np.clip(position, -1.0, float(samples))
    index = np.floor(position)
    t = (position - index).astype(np.float32)
    index = index.astype(np.intp) + 2
    p0, p1, p2, p3 = (np.take(padded, index + k, axis=1) for k in (-1, 0, 1, 2))
    cubic = 0.5 * (p3 - p0) + 1.5 * (p1 - p2)
    quadratic = p0 - 2.5 * p1 + 2.0 * p2 - 0.5 * p3
    return ((cubic * t + quadratic) * t + 0.5 * (p2 - p0)) * t + p1


@dataclass(frozen=True)
class DolbyBParams:
    """A Dolby B recording played back wrongly.

    ``"undecoded"``: the encoder's level-dependent boost of quiet high frequencies (up to +10 dB)
    stays in. ``"mistracked"``: decoded, but the tape plays ``tracking_error_db`` louder (negative:
    quieter) than the decoder expects, so it undoes the wrong amount.
    """

    mode: str
    tracking_error_db: float

    def __post_init__(self):
        if self.mode not in DOLBY_B_MODES:
            raise ValueError(f"Dolby B mode {self.mode!r} is not one of {DOLBY_B_MODES}")


class DolbyB:
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, undecoded_probability: float = 0.5, tracking_error_db: Range = (-5.0, 5.0)
    ) -> DolbyBParams:
        if rng.random() < undecoded_probability:
            return DolbyBParams(mode="undecoded", tracking_error_db=0.0)
        return DolbyBParams(mode="mistracked", tracking_error_db=rng.uniform(*tracking_error_db))

    @staticmethod
    def apply(x: np.ndarray, sample_rate: int, params: DolbyBParams) -> np.ndarray:
        block = block_size(sample_rate)
        low, high = first_order_split(x, sample_rate, DOLBY_B_CORNER_HZ)
        level_dbfs = block_level_dbfs(high, block)
        boost_db = dolby_b_boost_db(level_dbfs)
        if params.mode == "mistracked":
            boost_db = boost_db - dolby_b_boost_db(level_dbfs + params.tracking_error_db)
        return low + upsample_blocks(db_to_gain(boost_db), block, x.shape[1]) * high


@dataclass(frozen=True)
class SaturationParams:
    """Tape saturation: a soft clip (``ceiling * tanh(x / ceiling)``) of the record-equalised signal.

    The record EQ lifts high frequencies by ``emphasis_db`` before the tape, so they saturate first;
    the playback EQ takes the lift out again. 3 % THD is reached about 4.4 dB below the ceiling.
    """

    ceiling_dbfs: float
    emphasis_db: float


class Saturation:
    EMPHASIS_HZ = 3000.0

    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, ceiling_dbfs: Range = (-6.0, 0.0), emphasis_db: Range = (6.0, 12.0)
    ) -> SaturationParams:
        return SaturationParams(ceiling_dbfs=rng.uniform(*ceiling_dbfs), emphasis_db=rng.uniform(*emphasis_db))

    @classmethod
    def apply(cls, x: np.ndarray, sample_rate: int, params: SaturationParams) -> np.ndarray:
        # First-order high shelf (1 + s/w1) / (1 + s/w2); its zero is in the left half-plane, so the
        # de-emphasis (numerator and denominator swapped) is a stable exact inverse.
        low_w = 2 * np.pi * cls.EMPHASIS_HZ
        high_w = low_w * db_to_gain(params.emphasis_db)
        b, a = scipy.signal.bilinear([1.0 / low_w, 1.0], [1.0 / high_w, 1.0], fs=sample_rate)
        ceiling = np.float32(db_to_gain(params.ceiling_dbfs))
        clipped = ceiling * np.tanh(lfilter32(b, a, x) / ceiling)
        return lfilter32(a, b, clipped)


@dataclass(frozen=True)
class DropoutEvent:
    position: float  # start as a fraction of the signal length (params are drawn before the length is known)
    duration_s: float
    depth_db: float  # loss at high frequencies; low frequencies lose a third of it
    channel: int | None  # the one channel affected, or None for all


@dataclass(frozen=True)
class DropoutsParams:
    """Brief losses of tape-head contact (oxide shed, creases, dirt)."""

    events: tuple[DropoutEvent, ...]


class Dropouts:
    SPLIT_HZ = 2000.0
    RAMP_S = 0.002

    @staticmethod
    def sample_params(
        rng: np.random.Generator,
        *,
        count: tuple[int, int] = (1, 3),
        duration_s: Range = (0.005, 2.0),
        depth_db: Range = (6.0, 30.0),
        one_channel_probability: float = 0.3,
    ) -> DropoutsParams:
        events = []
        for _ in range(int(rng.integers(count[0], count[1] + 1))):
            one_channel = rng.random() < one_channel_probability
            events.append(DropoutEvent(
                position=rng.uniform(0.0, 1.0),
                duration_s=log_uniform(rng, *duration_s),
                depth_db=rng.uniform(*depth_db),
                channel=int(rng.integers(2)) if one_channel else None,
            ))
        return DropoutsParams(events=tuple(events))

    @classmethod
    def apply(cls, x: np.ndarray, sample_rate: int, params: DropoutsParams) -> np.ndarray:
        channels, samples = x.shape
        loss_db = np.zeros(x.shape, np.float32)
        for event in params.events:
            start = min(int(event.position * samples), samples - 1)
            length = min(max(1, round(event.duration_s * sample_rate)), samples - start)
            # Raised-cosine edges: head contact is lost and regained over a couple of milliseconds.
            ramp = min(round(cls.RAMP_S * sample_rate), length // 2)
            shape = np.ones(length, np.float32)
            if ramp:
                edge = (0.5 - 0.5 * np.cos(np.pi * np.arange(1, ramp + 1) / (ramp + 1))).astype(np.float32)
                shape[:ramp], shape[length - ramp :] = edge, edge[::-1]
            rows = slice(None) if event.channel is None else event.channel % channels
            loss_db[rows, start : start + length] += np.float32(event.depth_db) * shape
        # Only the samples inside some event change; low + high == x everywhere else.
        touched = np.flatnonzero(loss_db.any(axis=0))
        if touched.size == 0:
            return x.copy()
        span = slice(touched[0], touched[-1] + 1)
        low, high = first_order_split(x, sample_rate, cls.SPLIT_HZ)
        y = x.copy()
        y[:, span] = (low[:, span] * 10.0 ** (loss_db[:, span] / np.float32(-60.0))
                      + high[:, span] * 10.0 ** (loss_db[:, span] / np.float32(-20.0)))
        return y


@dataclass(frozen=True)
class RollOffParams:
    """High-frequency loss of a worn tape, dirty or worn head, or weak pressure pad: a second-order
    low-pass, -3 dB at ``corner_hz`` (a good deck: about 16 kHz)."""

    corner_hz: float


class RollOff:
    @staticmethod
    def sample_params(rng: np.random.Generator, *, corner_hz: Range = (6000.0, 18_000.0)) -> RollOffParams:
        return RollOffParams(corner_hz=rng.uniform(*corner_hz))

    @staticmethod
    def apply(x: np.ndarray, sample_rate: int, params: RollOffParams) -> np.ndarray:
        return fft_filter(x, sample_rate, lambda f: lowpass_response(f, params.corner_hz))


@dataclass(frozen=True)
class AzimuthParams:
    """Playback-head azimuth error: ``channel`` lags by ``delay_us`` and loses high frequencies
    (the tilted-gap loss sin(z)/z, -3 dB at ``hf_loss_hz``)."""

    delay_us: float
    hf_loss_hz: float
    channel: int


class Azimuth:
    @staticmethod
    def sample_params(
        rng: np.random.Generator, *, delay_us: Range = (0.0, 400.0), hf_loss_hz: Range = (6000.0, 16_000.0)
    ) -> AzimuthParams:
        return AzimuthParams(
            delay_us=rng.uniform(*delay_us), hf_loss_hz=rng.uniform(*hf_loss_hz), channel=int(rng.integers(2))
        )

    @staticmethod
    def apply(x: np.ndarray, sample_rate: int, params: AzimuthParams) -> np.ndarray:
        channels = x.shape[0]
        lagging = params.channel % channels

        def response(freqs_hz: np.ndarray) -> np.ndarray:
            result = np.ones((channels, freqs_hz.size), np.complex64)
            # sin(z)/z with z = 1.39 f / f_3dB (np.sinc(u) is sin(pi u) / (pi u)).
            result[lagging] = np.sinc(np.float32(1.39 / np.pi / params.hf_loss_hz) * freqs_hz)
            if channels > 1:  # a delay only means something between channels
                phase = np.float32(-2 * np.pi * params.delay_us * 1e-6) * freqs_hz
                result[lagging] *= np.cos(phase) + 1j * np.sin(phase)
            return result

        return fft_filter(x, sample_rate, response)
