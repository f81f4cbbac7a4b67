from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from cassette_denoise.audio import read_audio
from cassette_denoise.metrics import log_spectral_difference, lsd, score, segmental_snr, si_sdr

SAMPLE_RATE = 16_000
SEED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-cassette"


@pytest.fixture
def pair():
    """A stereo reference (tones plus a DC offset) and a scaled, noisy estimate of it, 1 s each."""
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    reference = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1000 * t)]) + 0.05
    estimate = 0.7 * reference + 0.05 * rng.standard_normal(reference.shape) + 0.02
    return reference, estimate


def test_si_sdr_matches_torchmetrics(pair):
    reference, estimate = pair
    expected = scale_invariant_signal_distortion_ratio(
        torch.from_numpy(estimate), torch.from_numpy(reference), zero_mean=True
    ).mean().item()
    assert si_sdr(reference, estimate) == pytest.approx(expected, abs=0.01)


def test_si_sdr_is_scale_invariant(pair):
    reference, estimate = pair
    assert si_sdr(reference, 3.7 * estimate) == pytest.approx(si_sdr(reference, estimate), abs=1e-9)


def test_si_sdr_of_orthogonal_noise_is_the_energy_ratio():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal(SAMPLE_RATE)
    reference -= reference.mean()
    noise = rng.standard_normal(SAMPLE_RATE)
    noise -= noise.mean()
    noise -= noise @ reference / (reference @ reference) * reference  # orthogonal to the reference
    noise *= np.sqrt(reference @ reference / (noise @ noise) / 10 ** (12.0 / 10))  # 12 dB below it
    assert si_sdr(reference, reference + noise) == pytest.approx(12.0, abs=1e-6)


def test_identical_signals_give_perfect_scores(pair):
    reference, _ = pair
    assert lsd(reference, reference) == pytest.approx(0.0, abs=1e-9)
    assert lsd(reference, reference, floor_db=80) == pytest.approx(0.0, abs=1e-9)
    assert segmental_snr(reference, reference, sample_rate=SAMPLE_RATE) == 35.0


def test_segmental_snr_of_silent_frames():
    reference = np.zeros((1, SAMPLE_RATE))
    assert segmental_snr(reference, reference, sample_rate=SAMPLE_RATE) == 35.0  # reproduced exactly
    assert segmental_snr(reference, reference + 0.1, sample_rate=SAMPLE_RATE) == -10.0


def test_segmental_snr_of_a_gain_error():
    reference = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    # estimate - reference = 0.1 * reference in every frame: 20 dB throughout
    assert segmental_snr(reference, 1.1 * reference, sample_rate=SAMPLE_RATE) == pytest.approx(20.0, abs=1e-9)


def test_floor_ignores_bins_the_reference_leaves_empty():
    rng = np.random.default_rng(2)
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)  # almost every bin empty
    hiss = 1e-4 * rng.standard_normal(SAMPLE_RATE)  # about 100 dB below the tone's peak bin
    assert lsd(tone, tone + hiss) > 20
    assert lsd(tone, tone + hiss, floor_db=80) < 0.1


def test_the_per_bin_difference_shows_where_the_distance_lies():
    rng = np.random.default_rng(3)
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    above_4_khz = np.fft.rfftfreq(SAMPLE_RATE) > 0.25
    high_hiss = 1e-2 * np.fft.irfft(np.fft.rfft(rng.standard_normal(SAMPLE_RATE)) * above_4_khz)
    difference = log_spectral_difference(tone, tone + high_hiss, floor_db=80)  # (1, frames, bins)
    bins_hz = np.fft.rfftfreq(2048, 1 / SAMPLE_RATE)
    assert difference.shape == (1, (SAMPLE_RATE - 2048) // 512 + 1, bins_hz.size)
    assert np.all(np.abs(difference[..., bins_hz < 3_000]) < 0.1)  # the tone and the empty bins below the hiss
    assert np.mean(difference[..., bins_hz > 5_000]) < -10  # the estimate's hiss stands above the floor
    assert lsd(tone, tone + high_hiss, floor_db=80) == pytest.approx(np.sqrt(np.mean(difference**2, axis=-1)).mean())


def test_mono_arrays_are_one_channel(pair):
    reference, estimate = pair
    assert score(reference[0], estimate[0], sample_rate=SAMPLE_RATE) == score(
        reference[:1], estimate[:1], sample_rate=SAMPLE_RATE
    )


def test_shape_mismatch_names_both_shapes(pair):
    reference, estimate = pair
    with pytest.raises(ValueError, match=r"\(2, 16000\).*\(2, 15999\)"):
        si_sdr(reference, estimate[:, :-1])


@pytest.mark.skipif(not SEED_DATA.is_dir(), reason=f"{SEED_DATA} is absent")
@pytest.mark.parametrize(
    "name, expected",
    [("ahrep_cassette.wav", (39.02, 4.74, 32.99)), ("ahrep_seed_model_output.wav", (22.88, 1.69, 22.78))],
)
def test_seed_excerpt_scores(name, expected):
    clean, sample_rate = read_audio(SEED_DATA / "ahrep_clean.wav")
    audio, _ = read_audio(SEED_DATA / name)
    scores = score(clean, audio, sample_rate=sample_rate)
    measured = (scores["si_sdr_db"], scores["lsd_f80_db"], scores["seg_snr_db"])
    assert measured == pytest.approx(expected, abs=0.1)
