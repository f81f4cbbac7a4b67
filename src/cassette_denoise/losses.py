"""Training losses on a predicted mask.

Every loss takes ``mask``, ``noisy`` and ``target`` shaped ``(batch, 1, BINS, frames)`` and returns a
scalar. The functions below take magnitudes unless they say otherwise; :data:`LOSSES`, which training
calls, takes the complex STFTs and hands each loss what it compares.
"""

from __future__ import annotations

import functools

import torch

from cassette_denoise import spectral

#: Magnitudes this far below full scale (−100 dB) count as silence in the log loss, so bins the
#: reference leaves empty do not demand an infinitely deep mask.
LOG_EPSILON = spectral.FULL_SCALE_MAGNITUDE * 1e-5


def frequency_weights(bins: int, *, low: float = 1.0, high: float = 5.0, device=None) -> torch.Tensor:
    """The seed's weights rising linearly from ``low`` at the lowest bin to ``high`` at the highest, ``(bins, 1)``."""
    return torch.linspace(low, high, bins, device=device).unsqueeze(-1)


def mask_mae(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's loss: high-frequency-weighted MAE against the ideal ratio mask (bounded to [0, 1])."""
    ideal = (target / noisy.clamp(min=1e-8)).clamp(0, 1)
    weights = frequency_weights(mask.shape[-2], device=mask.device)
    return ((mask - ideal).abs() * weights).mean() / weights.mean()


def output_log_l1(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the dB spectra of the masked output and the target, plus a scale-sensitive term.

    The log term treats a quiet hiss-only bin like a loud one, which is what removes hiss. Alone it
    shrugs at a small gain error on loud music, so the second term - the magnitude error relative
    to the target's mean magnitude per example - keeps loud bins at unity gain.
    """
    output = mask * noisy
    log_error = (20 * torch.log10(output + LOG_EPSILON) - 20 * torch.log10(target + LOG_EPSILON)).abs()
    weights = frequency_weights(mask.shape[-2], device=mask.device)
    log_term = (log_error * weights).mean() / weights.mean() / 20  # in units of 20 dB
    return log_term + linear_relative_l1(mask, noisy, target)


#: In :func:`gated_log_l1_plus_snr`, music more than this far below the noisy magnitude in a bin counts as absent.
BURIED_MUSIC_DB = 10.0


def gated_log_l1_plus_snr(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`log_l1_plus_snr` with the log term's target set to silence in bins where the music lies more
    than ``BURIED_MUSIC_DB`` under the noise.

    Music that far under hiss is inaudible in the input, so nothing audible is lost by removing the
    bin; asking the mask to recover it instead (the plain log term treats a −95 dB note under −82 dB
    hiss like a loud one) teaches a timid mask that leaves hiss wherever music might hide. The
    energy-weighted SNR term still sees the true target, so loud music keeps unity gain.
    """
    audible = target >= noisy * 10 ** (-BURIED_MUSIC_DB / 20)
    gated = torch.where(audible, target, torch.zeros_like(target))
    return output_log_l1(mask, noisy, gated) + magnitude_snr_loss(mask, noisy, target)


def linear_relative_l1(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on linear magnitudes relative to each example's mean target magnitude.

    Dominated by the loudest bins, where music lives: it holds them at unity gain.
    """
    scale = target.mean(dim=(1, 2, 3), keepdim=True).clamp(min=LOG_EPSILON)
    return ((mask * noisy - target).abs() / scale).mean()


def compressed_mse(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor, *, power: float = 0.3) -> torch.Tensor:
    """MSE between power-law-compressed magnitudes (``|·|^0.3``) of the masked output and the target.

    Compression sits between linear magnitude (which only sees the loudest bins, like SI-SDR) and
    dB (which treats an inaudible bin like a loud one): a bin 60 dB down still weighs 1/8 of a
    full-scale one. It is scale-sensitive, so a global gain error costs. Normalised per example by
    the target's compressed energy, so quiet pieces count as much as loud ones.
    """
    def compress(magnitude):
        return (magnitude / spectral.FULL_SCALE_MAGNITUDE + 1e-5) ** power

    error = (compress(mask * noisy) - compress(target)) ** 2
    energy = compress(target).pow(2).sum(dim=(1, 2, 3)).clamp(min=1e-8)
    return (error.sum(dim=(1, 2, 3)) / energy).mean()


def compressed_plus_linear(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`compressed_mse` to take hiss out of quiet bins + :func:`linear_relative_l1` to keep the music's level.

    Alone, the compressed MSE shrinks uncertain bins and let a −0.6 dB gain slip into the music
    (measured: SI-SDR 34.4 dB, segSNR 24.5 dB on the real excerpt, below the untouched input).
    """
    return compressed_mse(mask, noisy, target) + linear_relative_l1(mask, noisy, target)


def log_l1_plus_compressed(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`output_log_l1` + :func:`compressed_mse`: the log term's hiss removal and unity-gain anchor,
    with extra weight on mid-level bins where loud hiss and music overlap (what SI-SDR at 10 dB SNR needs)."""
    return output_log_l1(mask, noisy, target) + compressed_mse(mask, noisy, target)


def magnitude_snr_loss(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor, *,
                       best_snr_db: float = 50.0) -> torch.Tensor:
    """Negative signal-to-error ratio of the masked spectra per example, in units of 20 dB.

    Energy-weighted like SI-SDR but scale-sensitive, so a global gain slip costs. The error is softly
    floored ``best_snr_db`` below the target, so near-clean examples do not chase vanishing errors.
    On magnitudes it ignores phase; on complex spectra it is the waveform's SNR (the window's
    overlap-add is constant), which is what the noisy-phase output is scored by.
    """
    target_energy = target.abs().pow(2).sum(dim=(1, 2, 3))
    error_energy = (mask * noisy - target).abs().pow(2).sum(dim=(1, 2, 3))
    floor = target_energy * 10 ** (-best_snr_db / 10) + 1e-12
    return (10 * torch.log10((error_energy + floor) / (target_energy + 1e-12))).mean() / 20


def log_l1_plus_snr(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`output_log_l1` (hiss in quiet bins, unity gain) + :func:`magnitude_snr_loss` (the loud bins where
    hiss and music overlap, which decide SI-SDR at 10-20 dB input SNR)."""
    return output_log_l1(mask, noisy, target) + magnitude_snr_loss(mask, noisy, target)


def log_l1_plus_complex_snr(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`log_l1_plus_snr` with the SNR taken on the complex spectra (``noisy`` and ``target`` complex).

    The magnitude SNR teaches the ratio |S|/|X|; with the noisy phase kept, the gain that minimises
    the waveform error is |S|cos(Δφ)/|X|, lower wherever the noise turns the phase (measured: the
    magnitude-trained masks want squaring, docs/MODEL_CARD.md "Session 5").
    """
    return output_log_l1(mask, noisy.abs(), target.abs()) + magnitude_snr_loss(mask, noisy, target)


def _on_magnitudes(loss):
    @functools.wraps(loss)
    def on_spectra(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(mask, noisy.abs(), target.abs())
    return on_spectra


# Each takes the complex STFTs. compressed_mse alone is a building block, not a choice: from
# pass-through it learns slowly and, once trained, lowers the music's level (see docs/MODEL_CARD.md).
LOSSES = {
    **{loss.__name__: _on_magnitudes(loss) for loss in (
        mask_mae, output_log_l1, compressed_plus_linear, log_l1_plus_compressed, log_l1_plus_snr,
        gated_log_l1_plus_snr)},
    "log_l1_plus_complex_snr": log_l1_plus_complex_snr,
}
