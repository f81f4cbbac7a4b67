"""Small signal-processing helpers shared by the degradations.

All audio is float32 ``(channels, samples)``. Linear filters are applied as zero-phase responses in
the frequency domain (one rfft/irfft pair), level-dependent gains are computed per block and
interpolated, so a whole 1.5 s training crop costs a few milliseconds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft
import scipy.signal

# Digitised tapes are commonly aligned so that 0 VU (about Dolby level, 200 nWb/m) lands at -18 dBFS
# (EBU R68); the Dolby B level curves are defined relative to that.
DOLBY_LEVEL_DBFS = -18.0
# Dolby B acts as a sliding high shelf; a first-order split at this corner stands in for its band.
# With the full 10 dB of action this gives about -4 dB at 1 kHz and -9 dB at 4 kHz, close to the
# published low-level curves.
DOLBY_B_CORNER_HZ = 700.0
# Level-dependent gains are evaluated on blocks of this length (about the Dolby B release time scale).
BLOCK_S = 0.01

Range = tuple[float, float]  # (low, high) of a parameter to draw


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for the noise an effect generates, stored in its params so ``apply`` stays pure."""
    return int(rng.integers(2**32))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB re a full-scale DC (a full-scale sine reads -3 dBFS); -inf for silence."""
    value = rms(x)
    return 20.0 * np.log10(value) if value > 0 else -np.inf


def lowpass_response(freqs_hz: np.ndarray, corner_hz: float, *, order: int = 2) -> np.ndarray:
    """Butterworth magnitude: -3 dB at ``corner_hz``, ``6 * order`` dB per octave above."""
    return 1.0 / np.sqrt(1.0 + (freqs_hz / corner_hz) ** (2 * order))


def highpass_response(freqs_hz: np.ndarray, corner_hz: float, *, order: int = 2) -> np.ndarray:
    ratio = (freqs_hz / corner_hz) ** (2 * order)
    return np.sqrt(ratio / (1.0 + ratio))


def shelf_response(freqs_hz: np.ndarray, turnover_hz: float, gain_db: float) -> np.ndarray:
    """First-order high shelf: 0 dB well below ``turnover_hz``, ``gain_db`` well above."""
    upper_hz = turnover_hz * db_to_gain(gain_db)
    return np.sqrt((1.0 + (freqs_hz / turnover_hz) ** 2) / (1.0 + (freqs_hz / upper_hz) ** 2))


def rfft_freqs(n_fft: int, sample_rate: int) -> np.ndarray:
    """Bin frequencies of an ``n_fft``-point rfft, float32: responses are computed in single precision."""
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)


def fft_filter(
    x: np.ndarray, sample_rate: int, response: Callable[[np.ndarray], np.ndarray], *, pad_samples: int = 1024
) -> np.ndarray:
    """Filter ``(channels, samples)`` by a real (zero-phase) or complex frequency response.

    ``response(freqs_hz)`` returns ``(bins,)`` or ``(channels, bins)``. The zero padding keeps the
    circular convolution (and any delay in the response) from wrapping the end onto the start.
    """
    n_fft = scipy.fft.next_fast_len(x.shape[-1] + pad_samples, real=True)
    spectrum = scipy.fft.rfft(x, n=n_fft, axis=-1)
    spectrum *= response(rfft_freqs(n_fft, sample_rate)).astype(np.complex64, copy=False)
    return np.ascontiguousarray(scipy.fft.irfft(spectrum, n=n_fft, axis=-1)[..., : x.shape[-1]], dtype=np.float32)


def shaped_noise(
    rng: np.random.Generator, channels: int, samples: int, sample_rate: int,
    response: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Gaussian noise with magnitude spectrum ``response``, each channel independent, unit RMS.

    Drawn directly as a complex spectrum, so it costs one inverse FFT. The spectrum's real and
    imaginary parts are uniform rather than normal (an eighth of the cost to draw): every time sample,
    and every bin of an STFT much shorter than the signal, sums thousands of these independent bins,
    so the noise is Gaussian all the same.
    """
    n_fft = scipy.fft.next_fast_len(samples, real=True)
    bins = n_fft // 2 + 1
    spectrum = (rng.random((channels, 2 * bins), dtype=np.float32) - np.float32(0.5)).view(np.complex64)
    spectrum *= response(rfft_freqs(n_fft, sample_rate)).astype(np.float32, copy=False)
    spectrum[:, 0] = 0.0  # no DC offset
    noise = scipy.fft.irfft(spectrum, n=n_fft, axis=-1)[:, :samples]
    level = np.sqrt(np.mean(np.square(noise), axis=-1, keepdims=True))
    return (noise / np.maximum(level, 1e-30)).astype(np.float32, copy=False)


def block_size(sample_rate: int) -> int:
    return max(1, round(BLOCK_S * sample_rate))


def block_rms(x: np.ndarray, block: int) -> np.ndarray:
    """RMS of consecutive blocks: ``(channels, samples)`` -> ``(channels, ceil(samples / block))``."""
    channels, samples = x.shape
    blocks = -(-samples // block)
    padded = np.zeros((channels, blocks * block), np.float32)
    padded[:, :samples] = x
    return np.sqrt(np.mean(np.square(padded.reshape(channels, blocks, block)), axis=-1))


def upsample_blocks(values: np.ndarray, block: int, samples: int) -> np.ndarray:
    """Interpolate per-block values ``(channels, blocks)`` linearly between block centres -> ``(channels, samples)``."""
    position = np.maximum((np.arange(samples) + 0.5) / block - 0.5, 0.0)
    index = position.astype(np.intp)
    frac = (position - index).astype(np.float32)
    # Repeat the last block so the samples after the last centre hold its value.
    values = np.concatenate([values, values[:, -1:]], axis=-1).astype(np.float32, copy=False)
    low = np.take(values, index, axis=-1)
    return low + frac * (np.take(values, index + 1, axis=-1) - low)


def first_order_split(x: np.ndarray, sample_rate: int, corner_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Complementary ``(low, high)`` split with ``low + high == x`` exactly (a first-order low-pass)."""
    b, a = scipy.signal.butter(1, min(corner_hz, 0.45 * sample_rate), fs=sample_rate)
    low = lfilter32(b, a, x)
    return low, x - low


def lfilter32(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """IIR filter along the last axis in single precision (twice as fast as double; ample for first order)."""
    return scipy.signal.lfilter(np.float32(b), np.float32(a), np.asarray(x, np.float32), axis=-1)


def dolby_b_boost_db(hf_level_dbfs: np.ndarray) -> np.ndarray:
    """High-frequency boost of a Dolby B encoder for a given high-band level.

    Full 10 dB for quiet high frequencies (40 dB or more below Dolby level), none from 10 dB below
    Dolby level upwards (about -10 VU), linear in dB in between.
    """
    relative_db = hf_level_dbfs - DOLBY_LEVEL_DBFS
    return 10.0 * np.clip((-10.0 - relative_db) / 30.0, 0.0, 1.0)


def block_level_dbfs(x: np.ndarray, block: int) -> np.ndarray:
    """Per-block RMS level in dBFS: ``(channels, samples)`` -> ``(channels, blocks)``."""
    return 20.0 * np.log10(np.maximum(block_rms(x, block), 1e-10))
