"""Quality metrics: SI-SDR, log-spectral distance and segmental SNR.

The one implementation used by training, evaluation and benchmarks; the definitions are those of
``docs/seed-notes.md``. Every function takes float arrays shaped ``(channels, samples)`` (1-D is
treated as mono), computes per channel and returns the mean over channels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LSD_N_FFT = 2048
LSD_HOP = 512
SEG_SNR_FRAME_S = 0.025
SEG_SNR_RANGE_DB = (-10.0, 35.0)
_POWER_EPS = 1e-10  # added to both power spectra before the log, as in the definition
_EPS = 1e-20  # far below any real signal's energy; keeps silence and perfect estimates finite


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB.

    Args:
        reference, estimate: ``(channels, samples)``; each channel is made zero-mean first.
    """
    reference, estimate = _pair(reference, estimate)
    reference = reference - reference.mean(axis=1, keepdims=True)
    estimate = estimate - estimate.mean(axis=1, keepdims=True)
    scale = (estimate * reference).sum(axis=1, keepdims=True) / ((reference**2).sum(axis=1, keepdims=True) + _EPS)
    target = scale * reference
    noise = estimate - target
    ratio = ((target**2).sum(axis=1) + _EPS) / ((noise**2).sum(axis=1) + _EPS)
    return float(np.mean(10 * np.log10(ratio)))


def lsd(reference: np.ndarray, estimate: np.ndarray, *, floor_db: float | None = None) -> float:
    """Log-spectral distance in dB.

    Args:
        reference, estimate: ``(channels, samples)``, at least ``LSD_N_FFT`` samples long.
        floor_db: when given, both power spectra are first raised to at least
            ``max(P_ref) - floor_db`` per channel, so that bins the reference leaves empty (above a
            codec's cutoff) do not dominate; ``floor_db=80`` gives LSDf80.
    """
    difference = log_spectral_difference(reference, estimate, floor_db=floor_db)
    per_frame = np.sqrt(np.mean(difference**2, axis=-1))  # (channels, frames)
    return float(per_frame.mean())


def log_spectral_difference(reference: np.ndarray, estimate: np.ndarray, *,
                            floor_db: float | None = None) -> np.ndarray:
    """What :func:`lsd` averages: ``10·log10(P_ref) − 10·log10(P_est)`` per bin, dB, ``(channels, frames,
    LSD_N_FFT // 2 + 1)``, both spectra floored as there; for seeing where a distance comes from."""
    reference, estimate = _pair(reference, estimate)
    if reference.shape[1] < LSD_N_FFT:
        raise ValueError(f"LSD needs at least {LSD_N_FFT} samples, got shape {reference.shape}")
    power_ref, power_est = power_spectrogram(reference), power_spectrogram(estimate)
    if floor_db is not None:
        floor = spectral_floor(power_ref, floor_db=floor_db)
        power_ref, power_est = np.maximum(power_ref, floor), np.maximum(power_est, floor)
    return 10 * np.log10(power_ref + _POWER_EPS) - 10 * np.log10(power_est + _POWER_EPS)


def spectral_floor(power_ref: np.ndarray, *, floor_db: float) -> np.ndarray:
    """The floor LSD raises both spectra to: ``floor_db`` under the reference's largest bin, per channel;
    ``(channels, 1, 1)`` for a ``(channels, frames, bins)`` :func:`power_spectrogram`."""
    return power_ref.max(axis=(1, 2), keepdims=True) * 10 ** (-floor_db / 10)


def segmental_snr(reference: np.ndarray, estimate: np.ndarray, *, sample_rate: int) -> float:
    """Segmental SNR in dB over non-overlapping 25 ms frames, each clamped to [-10, 35] dB.

    Args:
        reference, estimate: ``(channels, samples)``, at least one frame long.
    """
    reference, estimate = _pair(reference, estimate)
    frame = int(SEG_SNR_FRAME_S * sample_rate)
    frames = reference.shape[1] // frame
    if frames == 0:
        raise ValueError(f"segSNR needs at least {frame} samples at {sample_rate} Hz, got shape {reference.shape}")
    usable = frames * frame
    signal = reference[:, :usable].reshape(reference.shape[0], frames, frame)
    noise = signal - estimate[:, :usable].reshape(signal.shape)
    energy_signal, energy_noise = (signal**2).sum(-1), (noise**2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10 * np.log10(energy_signal / energy_noise)
    # A frame reproduced exactly is perfect even when it is silent (0/0); the clamp bounds the rest.
    snr[energy_noise == 0] = np.inf
    return float(np.clip(snr, *SEG_SNR_RANGE_DB).mean())


def score(reference: np.ndarray, estimate: np.ndarray, *, sample_rate: int) -> dict[str, float]:
    """All metrics at once: ``si_sdr_db``, ``lsd_db``, ``lsd_f80_db`` and ``seg_snr_db``."""
    return {
        "si_sdr_db": si_sdr(reference, estimate),
        "lsd_db": lsd(reference, estimate),
        "lsd_f80_db": lsd(reference, estimate, floor_db=80.0),
        "seg_snr_db": segmental_snr(reference, estimate, sample_rate=sample_rate),
    }


def power_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Power spectrogram ``|STFT|^2``: ``(channels, samples)`` -> ``(channels, frames, LSD_N_FFT // 2 + 1)``.

    Only frames lying fully inside the signal are used (no padding), so edge effects of padding
    never count as spectral error.
    """
    window = np.hanning(LSD_N_FFT + 1)[:-1]  # periodic Hann
    frames = sliding_window_view(audio, LSD_N_FFT, axis=1)[:, ::LSD_HOP]
    return np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 ``(channels, samples)``, checked to have the same shape."""
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    estimate = np.atleast_2d(np.asarray(estimate, dtype=np.float64))
    if reference.shape != estimate.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and estimate must both be (channels, samples) of the same shape, "
            f"got {reference.shape} and {estimate.shape}"
        )
    return reference, estimate
