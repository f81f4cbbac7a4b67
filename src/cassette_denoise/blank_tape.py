"""Blank-tape recordings: a deck's own noise, read, checked and split for ``cassette-denoise adapt``.

A lead-in or run-out of a tape holds the deck's and the tape's noise alone (hiss, hum, rumble, whine),
which is what a model adapted to that deck must learn to take out. Each recording is read at the
model rate, its leading and trailing digital silence dropped and its DC removed, then refused when it
is silent or holds music:

**Blank tape is stationary; music is not.** Each STFT bin's power averaged over blocks of
:data:`BLOCK_S` varies little from block to block for stationary noise (about ±1 dB for 43 frames:
the spread of an average of many independent frames), and hardly at all for a steady hum or whine
line. Music puts notes into some bins and takes them out again, so those bins swing by 10-40 dB. The
statistic, :func:`level_spread_db`, is the :data:`BIN_QUANTILE` quantile over the bins from
:data:`LOWEST_HZ` up of each bin's spread between its :data:`LOW_QUANTILE` and :data:`HIGH_QUANTILE`
block levels: a click (left out of its block's power) or a dropout moves a few blocks and is passed
over, a slow drift of a few dB stays under :data:`MAX_SPREAD_DB`, and music in more than about a tenth
of the recording and a tenth of the bins exceeds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, read_resampled

#: Blocks over which each bin's power is averaged, s (43 STFT frames).
BLOCK_S = 0.5
#: Bins below this are left out: an off-speed hum's harmonics drift across the lowest bins' skirts.
LOWEST_HZ = 150.0
LOW_QUANTILE, HIGH_QUANTILE = 0.1, 0.95
BIN_QUANTILE = 0.9
#: Share of each block's loudest frames left out of its power, so that clicks do not count as music.
LOUDEST_FRAMES_SHARE = 0.1
#: Largest spread a blank tape may show, dB: stationary noise, hum, whine and rumble show 2-4, music
#: 10-70, and music in the last 15 % of a lead-in at least 10 (tests/test_blank_tape.py).
MAX_SPREAD_DB = 7.0
#: Quieter than this (RMS over all channels) is no tape noise, dBFS.
SILENT_BELOW_DBFS = -100.0
#: Leading and trailing blocks of this length quieter than :data:`SILENT_BELOW_DBFS` are digital silence.
SILENCE_BLOCK_S = 0.1
#: Least total noise ``adapt`` accepts, s: enough for training excerpts and a held-out quarter.
MIN_TOTAL_S = 20.0


class NoiseError(ValueError):
    """A blank-tape recording that cannot teach a model its noise; the message names the file and the value."""


@dataclass(frozen=True)
class BlankTape:
    """One recording's usable noise: float32 ``(channels, samples)`` at the model rate, zero-mean."""

    path: Path
    audio: np.ndarray
    source_sample_rate: int

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / MODEL_SAMPLE_RATE

    def split(self, *, held_out_share: float) -> tuple[np.ndarray, np.ndarray]:
        """``(first part, last held_out_share)`` of the audio, each ``(channels, samples)``."""
        cut = int(round(self.audio.shape[1] * (1.0 - held_out_share)))
        return self.audio[:, :cut], self.audio[:, cut:]


def read_blank_tapes(paths: list[str | os.PathLike], *, min_total_s: float = MIN_TOTAL_S) -> list[BlankTape]:
    """Read and check every recording, then their total length.

    Raises:
        AudioError: a file that cannot be read as audio.
        NoiseError: a silent or music-holding recording, or less than ``min_total_s`` of noise in all.
    """
    tapes = [read_blank_tape(path) for path in paths]
    total_s = sum(tape.seconds for tape in tapes)
    if total_s < min_total_s:
        each = ", ".join(f"{tape.path} {tape.seconds:.1f} s" for tape in tapes)
        raise NoiseError(f"{each}: {total_s:.1f} s of blank-tape noise in all; at least {min_total_s:g} s is needed "
                         "(record a longer lead-in or run-out, or give more files)")
    return tapes


def read_blank_tape(path: str | os.PathLike) -> BlankTape:
    """One recording, any rate and channel count, checked to be tape noise alone.

    Raises:
        AudioError: the file cannot be read as audio.
        NoiseError: it is silent, or its level moves like music's (the message gives the spread).
    """
    audio, rate = read_resampled(path)
    trimmed = _trim_digital_silence(audio)
    if trimmed.shape[1] < spectral.N_FFT:
        raise NoiseError(f"{path}: silent (RMS {_rms_dbfs(audio):.1f} dBFS over {audio.shape[1] / MODEL_SAMPLE_RATE:.1f} s; "
                         f"blank-tape noise is above {SILENT_BELOW_DBFS:g} dBFS)")
    audio = trimmed - trimmed.mean(axis=1, keepdims=True)
    level_dbfs = _rms_dbfs(audio)
    if level_dbfs < SILENT_BELOW_DBFS:
        raise NoiseError(f"{path}: silent (RMS {level_dbfs:.1f} dBFS; blank-tape noise is above "
                         f"{SILENT_BELOW_DBFS:g} dBFS)")
    spread_db = level_spread_db(audio)
    if spread_db > MAX_SPREAD_DB:
        raise NoiseError(f"{path}: holds music or other changing sound (its level moves {spread_db:.1f} dB over time; "
                         f"blank tape stays within {MAX_SPREAD_DB:g} dB): give a stretch of tape noise alone")
    return BlankTape(Path(path), np.ascontiguousarray(audio, dtype=np.float32), rate)


def level_spread_db(audio: np.ndarray) -> float:
    """How much the level moves over time, dB: see the module docstring.

    Args:
        audio: float32 ``(channels, samples)`` at the model rate, at least one STFT frame long.
    """
    power = block_power(audio)  # (bins, blocks)
    power = power[spectral.bin_frequencies_hz().numpy() >= LOWEST_HZ]
    level_db = 10.0 * np.log10(power + 1e-20)
    spread = np.quantile(level_db, HIGH_QUANTILE, axis=1) - np.quantile(level_db, LOW_QUANTILE, axis=1)
    return float(np.quantile(spread, BIN_QUANTILE))


def block_power(audio: np.ndarray) -> np.ndarray:
    """Each bin's power averaged over the channels and over blocks of :data:`BLOCK_S` (without the
    block's loudest :data:`LOUDEST_FRAMES_SHARE` of frames): ``(BINS, blocks)``.

    Long recordings go through the STFT a minute at a time, so memory stays small.
    """
    frames_per_block = max(1, round(BLOCK_S * MODEL_SAMPLE_RATE / spectral.HOP))
    chunk = frames_per_block * spectral.HOP * 120
    blocks = []
    for start in range(0, audio.shape[1], chunk):
        piece = torch.from_numpy(np.ascontiguousarray(audio[:, start: start + chunk]))
        if piece.shape[1] < spectral.N_FFT:
            break
        power = spectral.stft(piece).abs().square().mean(dim=0)  # (BINS, frames)
        usable = power.shape[1] // frames_per_block * frames_per_block or power.shape[1]
        frames = min(usable, frames_per_block)
        ordered = power[:, :usable].reshape(power.shape[0], -1, frames).sort(dim=-1).values
        blocks.append(ordered[..., : max(1, round(frames * (1 - LOUDEST_FRAMES_SHARE)))].mean(dim=-1))
    return torch.cat(blocks, dim=1).double().numpy()


def _trim_digital_silence(audio: np.ndarray) -> np.ndarray:
    """``audio`` without its leading and trailing blocks quieter than :data:`SILENT_BELOW_DBFS`."""
    block = int(SILENCE_BLOCK_S * MODEL_SAMPLE_RATE)
    count = audio.shape[1] // block
    if count == 0:
        return audio if _rms_dbfs(audio) >= SILENT_BELOW_DBFS else audio[:, :0]
    powers = np.square(audio[:, : count * block].reshape(audio.shape[0], count, block)).mean(axis=(0, 2))
    loud = np.flatnonzero(powers >= 10 ** (SILENT_BELOW_DBFS / 10))
    if loud.size == 0:
        return audio[:, :0]
    end = audio.shape[1] if loud[-1] == count - 1 else (loud[-1] + 1) * block
    kept = audio[:, loud[0] * block: end]
    # Within the outer blocks, to the sample: the first and last above the silence level.
    audible = np.flatnonzero(np.abs(kept).max(axis=0) >= 10 ** (SILENT_BELOW_DBFS / 20))
    return kept[:, audible[0]: audible[-1] + 1] if audible.size else kept


def _rms_dbfs(audio: np.ndarray) -> float:
    power = float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0
    return 10.0 * np.log10(power) if power > 0 else -np.inf
