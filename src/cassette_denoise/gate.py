"""A spectral gate for hiss that no music stands above.

The mask model judges hiss by its texture, and real tape hiss can look unlike the simulator's: on the
real excerpt the bundled model takes about 6 dB out of hiss-only bins at 9-12 kHz where it takes 11-12 dB
out of simulated hiss on the same music (docs/MODEL_CARD.md, sessions 8-9). The gate judges by level
alone, as a classic noise gate does: in a bin above GATE_LOW_HZ whose locally smoothed power stays
within a few dB of that bin's hiss level, nothing audible rises above the hiss, so the bin gets at least
REDUCTION_DB of attenuation. Its settings follow a classic spectral gate's usual defaults (12 dB of
reduction, smoothing over 3 bins); they were fixed before any measurement, not tuned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE

#: Hiss lives in the upper bands; below this the music is dense and the model alone decides.
GATE_LOW_HZ = 4000.0
#: Power is averaged over this many bins × frames (≈ 130 Hz × 58 ms) before it is compared: a single
#: bin of hiss swings by ±10 dB, an average of 15 by about ±2 dB.
SMOOTH_BINS, SMOOTH_FRAMES = 3, 5
#: Each bin's hiss level is this quantile of its smoothed power over the tile's frames ...
HISS_QUANTILE = 0.1
#: ... then a running median over this many bins, because hiss is smooth in frequency while a
#: harmonic that sounds through the whole tile is not.
HISS_MEDIAN_BINS = 9
#: Smoothed power this far above the hiss level closes the gate fully / leaves it fully open.
CLOSED_BELOW_DB, OPEN_ABOVE_DB = 6.0, 9.0
REDUCTION_DB = 12.0


def hiss_gate_gain(magnitude: torch.Tensor) -> torch.Tensor:
    """Gate gain in ``[10^(-REDUCTION_DB/20), 1]`` for one tile's magnitudes.

    Args:
        magnitude: ``(channels, BINS, frames)``; the hiss level is estimated over all ``frames``,
            so callers pass exactly one tile.
    Returns:
        ``(channels, BINS, frames)``: 1 below GATE_LOW_HZ and wherever the smoothed power is at
        least OPEN_ABOVE_DB above the bin's hiss level, falling log-linearly to the full reduction at
        CLOSED_BELOW_DB.
    """
    if magnitude.ndim != 3 or magnitude.shape[1] != spectral.BINS:
        raise ValueError(f"magnitude must be (channels, {spectral.BINS}, frames), got {tuple(magnitude.shape)}")
    power = magnitude.float().square().unsqueeze(1)
    smoothed = F.avg_pool2d(power, (SMOOTH_BINS, SMOOTH_FRAMES), stride=1,
                            padding=(SMOOTH_BINS // 2, SMOOTH_FRAMES // 2), count_include_pad=False).squeeze(1)
    smoothed_db = 10 * torch.log10(smoothed + 1e-20)
    rank = max(1, round(HISS_QUANTILE * smoothed_db.shape[-1]))
    level_db = smoothed_db.kthvalue(rank, dim=-1).values
    half = HISS_MEDIAN_BINS // 2
    level_db = F.pad(level_db.unsqueeze(1), (half, half), mode="replicate").squeeze(1)
    level_db = level_db.unfold(-1, HISS_MEDIAN_BINS, 1).median(dim=-1).values
    excess_db = smoothed_db - level_db.unsqueeze(-1)
    openness = ((excess_db - CLOSED_BELOW_DB) / (OPEN_ABOVE_DB - CLOSED_BELOW_DB)).clamp(0.0, 1.0)
    gain_db = -REDUCTION_DB * (1.0 - openness)
    gain_db[:, : first_gated_bin()] = 0.0
    return 10 ** (gain_db / 20)


def first_gated_bin() -> int:
    """Index of the lowest bin at or above GATE_LOW_HZ."""
    return int(-(-GATE_LOW_HZ * spectral.N_FFT // MODEL_SAMPLE_RATE))
