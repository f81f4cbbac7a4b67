"""The training loss on a predicted mask, and the penalty that keeps the mask's logits in reach.

Every term takes ``mask`` (real, 0-1) and ``noisy`` and ``target`` shaped ``(batch, 1, BINS, frames)``
and returns a scalar. :func:`spectral_loss` is what training minimises; it takes the complex STFTs.
"""

from __future__ import annotations

import torch

from cassette_denoise import spectral

#: Magnitudes this far below full scale (−100 dB) count as silence in the log loss, so bins the
#: reference leaves empty do not demand an infinitely deep mask.
LOG_EPSILON = spectral.FULL_SCALE_MAGNITUDE * 1e-5


def frequency_weights(bins: int, *, low: float = 1.0, high: float = 5.0, device=None) -> torch.Tensor:
    """Weights rising linearly from ``low`` at the lowest bin to ``high`` at the highest, ``(bins, 1)``:
    hiss lives in the treble, where the music is quietest."""
    return torch.linspace(low, high, bins, device=device).unsqueeze(-1)


def output_log_l1(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the dB spectra of the masked output and the target (magnitudes), plus a scale-sensitive term.

    The log term treats a quiet hiss-only bin like a loud one, which is what removes hiss. Alone it
    shrugs at a small gain error on loud music, so the second term - the magnitude error relative
    to the target's mean magnitude per example - keeps loud bins at unity gain.
    """
    output = mask * noisy
    log_error = (20 * torch.log10(output + LOG_EPSILON) - 20 * torch.log10(target + LOG_EPSILON)).abs()
    weights = frequency_weights(mask.shape[-2], device=mask.device)
    log_term = (log_error * weights).mean() / weights.mean() / 20  # in units of 20 dB
    return log_term + linear_relative_l1(mask, noisy, target)


def linear_relative_l1(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on linear magnitudes relative to each example's mean target magnitude.

    Dominated by the loudest bins, where music lives: it holds them at unity gain.
    """
    scale = target.mean(dim=(1, 2, 3), keepdim=True).clamp(min=LOG_EPSILON)
    return ((mask * noisy - target).abs() / scale).mean()


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


def spectral_loss(mask: torch.Tensor, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`output_log_l1` on magnitudes (hiss in quiet bins, unity gain) + :func:`magnitude_snr_loss` on
    the complex spectra (the loud bins where hiss and music overlap, which decide SI-SDR at 10-20 dB SNR).

    ``noisy`` and ``target`` are complex. The SNR is taken on them rather than on magnitudes because,
    with the noisy phase kept, the gain that minimises the waveform error is |S|cos(Δφ)/|X|, lower
    wherever the noise turns the phase; a magnitude SNR would teach |S|/|X| and leave that error in.
    """
    return output_log_l1(mask, noisy.abs(), target.abs()) + magnitude_snr_loss(mask, noisy, target)


def logit_penalty(logits: torch.Tensor, *, limit: float) -> torch.Tensor:
    """Mean squared excess of ``|logits|`` over ``limit``; zero inside the range.

    Without it the loss pushes music bins' logits ever higher (a mask of exactly 1 needs an infinite
    logit); there the sigmoid's gradient vanishes, and hiss bins that share those features can no
    longer be learned down.
    """
    return torch.relu(logits.abs() - limit).pow(2).mean()


def teacher_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, *, limit: float) -> torch.Tensor:
    """Mean squared difference of ``logits`` from a teacher's, the teacher's clipped to ``±limit`` (the range
    :func:`logit_penalty` keeps the model's own in), over tensors of one shape."""
    return (logits - teacher_logits.clamp(-limit, limit)).pow(2).mean()
