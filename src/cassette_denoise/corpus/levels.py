"""Levels and lengths of corpus audio: silence trimmed, peaks set, long pieces cut or split, stereo made."""

from __future__ import annotations

import math

import numpy as np

from cassette_denoise.audio import MODEL_SAMPLE_RATE


PEAK_DBFS_RANGE = (-12.0, -1.0)


# A sample is digital silence when it is below the 16-bit step (what the FLAC file can hold) or more than
# 80 dB below the file's peak (a reverb tail nobody hears).
SILENCE_FLOOR = 2.0 ** -15


SILENCE_BELOW_PEAK_DB = 80.0


FADE_OUT_S = 2.0


DEFAULT_MAX_FILE_S = 150.0


def sample_peak_dbfs(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*PEAK_DBFS_RANGE)), 2)


# Levels and lengths


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Drop leading and trailing digital silence from ``(channels, samples)`` audio."""
    level = np.abs(audio).max(axis=0)
    peak = float(level.max(initial=0.0))
    threshold = max(SILENCE_FLOOR, peak * 10.0 ** (-SILENCE_BELOW_PEAK_DB / 20.0))
    loud = np.flatnonzero(level > threshold)
    if loud.size == 0:
        return audio[:, :0]
    return audio[:, loud[0]: loud[-1] + 1]


def normalise_peak(audio: np.ndarray, *, peak_dbfs: float) -> np.ndarray:
    """Scale ``(channels, samples)`` audio so that its sample peak is ``peak_dbfs``."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak == 0.0:
        raise ValueError("cannot normalise silence")
    return (audio * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def cut_with_fade(audio: np.ndarray, *, max_samples: int) -> np.ndarray:
    if audio.shape[1] <= max_samples:
        return audio
    audio = audio[:, :max_samples].copy()
    # A raised-cosine fade: a hard cut would be a click that the denoiser might learn to keep.
    fade = min(int(FADE_OUT_S * MODEL_SAMPLE_RATE), max_samples)
    audio[:, max_samples - fade:] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade))).astype(np.float32)
    return audio


def split_evenly(audio: np.ndarray, *, max_samples: int) -> list[tuple[int, np.ndarray]]:
    """Cut long audio into equal consecutive parts of at most ``max_samples``; returns ``(start, part)``."""
    count = max(1, math.ceil(audio.shape[1] / max_samples))
    bounds = np.linspace(0, audio.shape[1], count + 1).round().astype(int)
    return [(int(start), audio[:, start:end]) for start, end in zip(bounds[:-1], bounds[1:])]


def to_stereo(audio: np.ndarray) -> np.ndarray:
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    # Files with more channels keep the front left/right pair (the first two in WAV, FLAC and Ogg order).
    return np.ascontiguousarray(audio[:2])
