import numpy as np
import pytest
import torch

from cassette_denoise import spectral
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.gate import REDUCTION_DB, first_gated_bin, hiss_gate_gain

RATE = 44100


def magnitudes(audio: np.ndarray) -> torch.Tensor:
    """``(channels, BINS, 512)`` magnitudes of the first 512 frames."""
    return spectral.stft(torch.from_numpy(audio.astype(np.float32))).abs()[..., :512]


def hiss(seconds: float, *, level: float = 1e-3, seed: int = 0) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal((1, int(seconds * RATE)))


def gain_db(gain: torch.Tensor) -> torch.Tensor:
    return 20 * torch.log10(gain)


def test_hiss_alone_gets_the_full_reduction_above_the_gated_band_and_none_below():
    gain = gain_db(hiss_gate_gain(magnitudes(hiss(6.5))))
    assert gain.shape == (1, spectral.BINS, 512)
    assert torch.all(gain[:, : first_gated_bin()] == 0)
    above = gain[:, first_gated_bin():]
    assert above.min() >= -REDUCTION_DB - 1e-4 and above.max() <= 0
    # A 15-cell average of hiss rarely strays 6 dB above its 10 % quantile.
    assert above.mean() < -REDUCTION_DB + 0.2, above.mean()


def test_a_tone_above_the_hiss_opens_the_gate_only_where_it_sounds():
    t = np.arange(int(6.5 * RATE)) / RATE
    tone_hz = 9000.0
    audio = hiss(6.5) + 0.05 * np.sin(2 * np.pi * tone_hz * t) * (t > 3.5)
    gain = gain_db(hiss_gate_gain(magnitudes(audio)))[0]
    tone_bin = round(tone_hz * spectral.N_FFT / RATE)
    tone_starts = int(3.5 * RATE / spectral.HOP)
    assert torch.all(gain[tone_bin, tone_starts + 4: 512] == 0)
    assert gain[tone_bin, : tone_starts - 4].mean() < -REDUCTION_DB + 0.5
    assert gain[tone_bin + 20, tone_starts + 4:].mean() < -REDUCTION_DB + 0.5


def test_a_harmonic_sounding_through_the_whole_tile_is_not_taken_for_hiss():
    t = np.arange(int(6.5 * RATE)) / RATE
    audio = hiss(6.5) + 0.02 * np.sin(2 * np.pi * 7000.0 * t)
    gain = gain_db(hiss_gate_gain(magnitudes(audio)))[0]
    assert torch.all(gain[round(7000.0 * spectral.N_FFT / RATE)] == 0)


@pytest.mark.parametrize("scale", [1e-3, 30.0])
def test_the_gate_depends_on_levels_relative_to_the_hiss_only(scale):
    t = np.arange(int(6.5 * RATE)) / RATE
    audio = hiss(6.5, seed=3) + 0.01 * np.sin(2 * np.pi * 5000.0 * t) * np.sin(2 * np.pi * 0.3 * t) ** 2
    reference = hiss_gate_gain(magnitudes(audio))
    torch.testing.assert_close(hiss_gate_gain(magnitudes(audio * scale)), reference, atol=1e-4, rtol=0)


def test_a_wrong_shape_is_refused_with_the_shape_named():
    with pytest.raises(ValueError, match=r"\(3, 100\)"):
        hiss_gate_gain(torch.ones(3, 100))


def test_the_gated_denoiser_streams_identically_and_only_ever_lowers_the_spectrum(pass_through_model):
    audio = (hiss(9.0, seed=5)[0] + 0.1 * np.sin(2 * np.pi * 440.0 * np.arange(int(9.0 * RATE)) / RATE))[None]
    audio = np.concatenate([audio, hiss(9.0, seed=6)]).astype(np.float32)
    gated = Denoiser(pass_through_model, device="cpu", remove_hum=False, hiss_gate=True)
    whole = gated.denoise(audio, RATE)
    stream = gated.stream(channels=2, sample_rate=RATE)
    pieces = [stream.process(audio[:, start: start + 54_321]) for start in range(0, audio.shape[1], 54_321)]
    np.testing.assert_array_equal(np.concatenate([*pieces, stream.finish()], axis=1), whole)
    # A pass-through model: the hiss above 4 kHz loses the gate's 12 dB, the tone below keeps its level.
    before, after = magnitudes(audio[:, :RATE * 6]), magnitudes(whole[:, :RATE * 6])
    high = first_gated_bin() + 10
    drop_db = 20 * torch.log10(after[:, high:].mean() / before[:, high:].mean())
    assert -REDUCTION_DB - 0.5 < drop_db < -REDUCTION_DB + 1.5, drop_db
    tone = round(440.0 * spectral.N_FFT / RATE)
    torch.testing.assert_close(after[0, tone, 20:-20], before[0, tone, 20:-20], rtol=1e-3, atol=1e-6)
