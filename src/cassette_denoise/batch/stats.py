"""What the batch report says about one tape, measured in one streaming pass over a file.

Levels are the metrics' power spectrogram (:func:`metrics.power_spectrogram`, the one the pictures use) in dB re
a full-scale sine's peak bin. A band's *noise floor* is the mean over its bins of each bin's low percentile over
time: every bin is quiet between the notes that pass through it, and there the hiss and rumble show, even in
music that never pauses (a whole band's level would not: on the real excerpt the band floor of 4-16 kHz moved
0.5 dB where the per-bin floor showed the 15 dB the denoiser took off). The pass keeps a level histogram per bin
and a fixed-size thumbnail, so its memory does not grow with the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cassette_denoise.audio import iter_blocks, probe
from cassette_denoise.metrics import LSD_HOP, LSD_N_FFT, power_spectrogram

#: The report's bands, Hz: rumble and hum below 200 Hz, the music's middle, tape hiss from 4 kHz up.
BANDS_HZ = {"rumble": (20.0, 200.0), "mid": (200.0, 4000.0), "hiss": (4000.0, 16000.0)}
FLOOR_PERCENTILE = 10.0
#: Histogram of each bin's levels: 0.5 dB steps resolve the floor far finer than tapes differ.
HISTOGRAM_DB = (-160.0, 20.0, 0.5)
THUMBNAIL_ROWS, THUMBNAIL_COLUMNS = 48, 160
#: Samples per block read; 2^17 frames is about 3 s at 44.1 kHz.
BLOCK_FRAMES = 1 << 17
_FULL_SCALE_POWER = (LSD_N_FFT / 4) ** 2
_TINY = 1e-20


@dataclass(frozen=True)
class Levels:
    """One file's band noise floors (dB; ``None`` for a band above the file's Nyquist frequency) and its
    thumbnail spectrogram, dB ``(rows, columns)``, at most THUMBNAIL_ROWS × THUMBNAIL_COLUMNS: rows on a
    log-frequency axis from the first bin to the Nyquist frequency, columns spread evenly over the file."""

    floors_db: dict[str, float | None]
    thumbnail_db: np.ndarray


def measure(path: str | Path) -> Levels:
    """Stream ``path`` once and measure its band floors and thumbnail (channels are averaged in power).

    Raises:
        AudioError: unreadable or corrupt file.
    """
    info = probe(path)
    frequencies = np.fft.rfftfreq(LSD_N_FFT, 1 / info.sample_rate)
    bands = {name: (frequencies >= low) & (frequencies < high) for name, (low, high) in BANDS_HZ.items()}
    measured = np.any(list(bands.values()), axis=0)  # the bins some band needs
    row_edges = np.unique(np.geomspace(1, len(frequencies), THUMBNAIL_ROWS + 1).astype(int))
    low, high, step = HISTOGRAM_DB
    levels = int((high - low) / step)
    histogram = np.zeros(int(measured.sum()) * levels, np.int64)  # (measured bins, levels) flattened
    full_blocks, rest = divmod(info.frames, BLOCK_FRAMES)
    expected_frames = full_blocks * _frames_in(BLOCK_FRAMES) + (_frames_in(rest) if rest else 0)
    width = min(THUMBNAIL_COLUMNS, expected_frames)  # a short file has fewer frames than a thumbnail columns
    column_sum = np.zeros((len(row_edges) - 1, width))
    column_count = np.zeros(width)
    frames_seen = 0
    for block in iter_blocks(info, block_frames=BLOCK_FRAMES):
        if block.shape[1] < LSD_N_FFT:  # a file's short tail, or a file shorter than one frame
            block = np.pad(block, ((0, 0), (0, LSD_N_FFT - block.shape[1])))
        power = power_spectrogram(block).mean(axis=0) / _FULL_SCALE_POWER  # (frames, bins)
        level = np.clip(((10 * np.log10(power[:, measured] + _TINY) - low) / step).astype(int), 0, levels - 1)
        histogram += np.bincount((level + np.arange(level.shape[1]) * levels).ravel(), minlength=histogram.size)
        rows = np.add.reduceat(power, row_edges[:-1], axis=1) / np.diff(row_edges)  # (frames, rows)
        columns = np.minimum((frames_seen + np.arange(len(power))) * width // expected_frames, width - 1)
        np.add.at(column_sum.T, columns, rows)
        np.add.at(column_count, columns, 1)
        frames_seen += len(power)
    floors = _percentile(histogram.reshape(-1, levels), FLOOR_PERCENTILE)  # (measured bins,)
    band_floors = {name: float(floors[in_band[measured]].mean()) if in_band.any() else None
                   for name, in_band in bands.items()}
    thumbnail = 10 * np.log10(column_sum / np.maximum(column_count, 1) + _TINY)
    return Levels(band_floors, thumbnail.astype(np.float32))


def _frames_in(samples: int) -> int:
    """Spectrogram frames of one block (blocks are measured apart; a short one is padded to one frame)."""
    return (max(samples, LSD_N_FFT) - LSD_N_FFT) // LSD_HOP + 1


def _percentile(histogram: np.ndarray, percent: float) -> np.ndarray:
    """Per row of a level histogram ``(rows, levels)``, the level below which ``percent`` of its counts lie, dB
    (the step's centre), ``(rows,)``."""
    low, _, step = HISTOGRAM_DB
    cumulative = np.cumsum(histogram, axis=1)
    wanted = np.ceil(cumulative[:, -1:] * percent / 100)
    return low + (np.argmax(cumulative >= wanted, axis=1) + 0.5) * step
