"""What the batch report says about one tape, measured in one streaming pass over a file.

Levels are the metrics' power spectrogram (:func:`metrics.power_spectrogram`, the one the pictures use) in dB re
a full-scale sine's peak bin, averaged over the bins of a band. A band's *noise floor* is a low percentile of its
frame levels: the quietest tenth of a tape is where hiss and rumble are left uncovered by the music. The pass keeps
a histogram per band and a fixed-size thumbnail, so its memory does not grow with the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cassette_denoise.audio import iter_blocks, probe
from cassette_denoise.metrics import LSD_HOP, LSD_N_FFT, power_spectrogram

#: The report's bands, Hz: rumble and hum below 200 Hz, the music's middle, tape hiss from 4 kHz up.
BANDS_HZ = {"rumble": (20.0, 200.0), "mid": (200.0, 4000.0), "hiss": (4000.0, 16000.0)}
FLOOR_PERCENTILE = 10.0
#: Histogram of frame levels: 0.25 dB steps cover the floor percentile far finer than tapes differ.
HISTOGRAM_DB = (-160.0, 20.0, 0.25)
THUMBNAIL_ROWS, THUMBNAIL_COLUMNS = 48, 160
#: Samples per block read; 2^17 frames is about 3 s at 44.1 kHz.
BLOCK_FRAMES = 1 << 17
_FULL_SCALE_POWER = (LSD_N_FFT / 4) ** 2
_TINY = 1e-20


@dataclass(frozen=True)
class Levels:
    """One file's band noise floors (dB; ``None`` for a band above the file's Nyquist frequency or a file too
    short for one frame) and its thumbnail spectrogram, dB ``(rows, THUMBNAIL_COLUMNS)`` with up to THUMBNAIL_ROWS rows on a
    log-frequency axis from the first bin to the Nyquist frequency, columns evenly spread over the file's duration."""

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
    row_edges = np.unique(np.geomspace(1, len(frequencies), THUMBNAIL_ROWS + 1).astype(int))
    low, high, step = HISTOGRAM_DB
    histograms = {name: np.zeros(int((high - low) / step), np.int64) for name in bands}
    column_sum = np.zeros((len(row_edges) - 1, THUMBNAIL_COLUMNS))
    column_count = np.zeros(THUMBNAIL_COLUMNS)
    full_blocks, rest = divmod(info.frames, BLOCK_FRAMES)
    expected_frames = full_blocks * _frames_in(BLOCK_FRAMES) + (_frames_in(rest) if rest else 0)
    frames_seen = 0
    for block in iter_blocks(info, block_frames=BLOCK_FRAMES):
        if block.shape[1] < LSD_N_FFT:  # a file's short tail, or a file shorter than one frame
            block = np.pad(block, ((0, 0), (0, LSD_N_FFT - block.shape[1])))
        power = power_spectrogram(block).mean(axis=0) / _FULL_SCALE_POWER  # (frames, bins)
        for name, in_band in bands.items():
            if in_band.any():
                level = 10 * np.log10(power[:, in_band].mean(axis=1) + _TINY)
                index = np.clip(((level - low) / step).astype(int), 0, len(histograms[name]) - 1)
                histograms[name] += np.bincount(index, minlength=len(histograms[name]))
        rows = np.add.reduceat(power, row_edges[:-1], axis=1) / np.diff(row_edges)  # (frames, rows)
        columns = np.minimum((frames_seen + np.arange(len(power))) * THUMBNAIL_COLUMNS // expected_frames,
                             THUMBNAIL_COLUMNS - 1)
        np.add.at(column_sum.T, columns, rows)
        np.add.at(column_count, columns, 1)
        frames_seen += len(power)
    floors = {name: _percentile(counts, FLOOR_PERCENTILE) if bands[name].any() else None
              for name, counts in histograms.items()}
    thumbnail = 10 * np.log10(column_sum / np.maximum(column_count, 1) + _TINY)
    return Levels(floors, thumbnail.astype(np.float32))


def _frames_in(samples: int) -> int:
    """Spectrogram frames of one block (blocks are measured apart; a short one is padded to one frame)."""
    return (max(samples, LSD_N_FFT) - LSD_N_FFT) // LSD_HOP + 1


def _percentile(counts: np.ndarray, percent: float) -> float | None:
    """The level below which ``percent`` of the histogram's frames lie, dB (the bin's centre)."""
    total = counts.sum()
    if total == 0:
        return None
    low, _, step = HISTOGRAM_DB
    index = int(np.searchsorted(np.cumsum(counts), math.ceil(total * percent / 100)))
    return low + (index + 0.5) * step
