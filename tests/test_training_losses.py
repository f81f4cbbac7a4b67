"""The training loss and the logit penalty."""

import pytest
import torch

from cassette_denoise.training.losses import logit_penalty, magnitude_snr_loss, output_log_l1, spectral_loss


def test_the_log_loss_is_zero_for_a_perfect_mask_and_counts_a_gain_error():
    noisy = torch.rand(2, 1, 512, 32) + 0.5
    target = noisy * 0.5
    assert output_log_l1(torch.full_like(noisy, 0.5), noisy, target) < 1e-5
    assert output_log_l1(torch.ones_like(noisy), noisy, target) > 0.1
    # Scale-sensitive: a global gain error is penalised.
    assert output_log_l1(torch.full_like(noisy, 0.45), noisy, target) > 0.01


def test_magnitude_snr_loss_is_the_error_ratio_in_20_db_units_and_capped_for_a_perfect_mask():
    noisy = torch.rand(2, 1, 512, 32) + 0.5
    target = noisy * 0.5
    # A mask of 0.55 leaves an error 10 % of the target's magnitude: SNR 20 dB -> -1.
    torch.testing.assert_close(magnitude_snr_loss(torch.full_like(noisy, 0.55), noisy, target), torch.tensor(-1.0),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(magnitude_snr_loss(torch.full_like(noisy, 0.5), noisy, target), torch.tensor(-2.5),
                               atol=1e-3, rtol=0)
    as_complex = noisy.to(torch.complex64), target.to(torch.complex64)
    assert spectral_loss(torch.full_like(noisy, 0.45), *as_complex) > spectral_loss(torch.full_like(noisy, 0.5), *as_complex)


def test_snr_loss_on_complex_spectra_counts_the_phase_error_that_magnitudes_cannot_see():
    generator = torch.Generator().manual_seed(0)
    target = torch.complex(torch.randn(2, 1, 512, 32, generator=generator), torch.randn(2, 1, 512, 32, generator=generator))
    turned = target * torch.exp(1j * torch.rand(target.shape, generator=generator) * 0.6)
    mask = torch.full(target.shape, 0.8)
    # In phase, complex spectra score exactly as their magnitudes.
    torch.testing.assert_close(magnitude_snr_loss(mask, target, target), magnitude_snr_loss(mask, target.abs(), target.abs()))
    # Turned phases: the magnitudes see no error at a mask of 1, the complex spectra do.
    ones = torch.ones(target.shape)
    assert magnitude_snr_loss(ones, turned.abs(), target.abs()) < -2.4
    assert magnitude_snr_loss(ones, turned, target) > -1.0
    # ... and prefers a gain below 1 there, as the cosine of the phase error asks.
    assert magnitude_snr_loss(torch.full(target.shape, 0.9), turned, target) < magnitude_snr_loss(ones, turned, target)


def test_logit_penalty_is_zero_inside_the_limit_and_pulls_saturated_logits_back():
    assert logit_penalty(torch.tensor([-4.9, 0.0, 4.9]), limit=5.0) == 0
    logits = torch.tensor([9.0, -7.0], requires_grad=True)
    penalty = logit_penalty(logits, limit=5.0)
    penalty.backward()
    assert penalty.item() == pytest.approx((16 + 4) / 2)
    assert logits.grad[0] > 0 and logits.grad[1] < 0  # gradient descent moves both towards the range
