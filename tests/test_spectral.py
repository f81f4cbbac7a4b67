import numpy as np
import pytest
import torch

from cassette_denoise import spectral
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.metrics import si_sdr

from conftest import music_like


def test_stft_has_512_bins_and_hop_512():
    spectra = spectral.stft(torch.zeros(2, spectral.N_FFT + 3 * spectral.HOP))
    assert spectra.shape == (2, 512, 4)


def test_overlap_add_inverts_the_stft_inside_the_padded_region():
    signal = torch.randn(3, 20_000, dtype=torch.float64)
    padded = torch.nn.functional.pad(signal, (spectral.pad_amount(), spectral.N_FFT + spectral.HOP))
    frames = spectral.frame_count(signal.shape[-1])
    summed, envelope = spectral.istft_frames(spectral.stft(padded)[..., :frames])
    restored = (summed / envelope.clamp(min=1e-3))[..., spectral.pad_amount(): spectral.pad_amount() + 20_000]
    assert torch.allclose(restored, signal, atol=1e-9)
    assert envelope[spectral.pad_amount(): spectral.pad_amount() + 20_000].min() > 0.45


def test_features_use_a_fixed_full_scale_reference():
    on_bin = 23 / spectral.N_FFT  # cycles per sample, centred on bin 23 (no scalloping loss)
    full_scale_sine = torch.sin(2 * torch.pi * on_bin * torch.arange(8192, dtype=torch.float64))
    peak = spectral.stft(full_scale_sine).abs().max()
    assert 20 * torch.log10(peak / spectral.FULL_SCALE_MAGNITUDE) == pytest.approx(0, abs=0.01)
    # A tile's features depend only on its own magnitudes, not on how loud the rest of the file is.
    magnitude = torch.rand(1, 512, 16)
    assert torch.equal(spectral.to_features(magnitude), spectral.to_features(torch.cat([magnitude, 100 * magnitude], -1))[..., :16])
    assert spectral.to_features(torch.tensor([0.0, 1e9])).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("overlap", [1, 64, 128, 256])
def test_crossfade_weights_sum_to_one_between_neighbouring_tiles(overlap):
    weights = spectral.crossfade_window(512, overlap_frames=overlap)
    hop = 512 - overlap
    assert torch.allclose(weights[hop:] + weights[:overlap], torch.ones(overlap))
    assert torch.equal(weights[overlap:hop], torch.ones(hop - overlap))
    assert weights.min() > 0


def test_crossfade_of_half_a_tile_is_one_hump_and_bad_overlaps_are_refused():
    positions = torch.arange(512, dtype=torch.float64) + 0.5
    hump = (torch.sin(torch.pi * positions / 512) ** 2).float()
    assert torch.allclose(spectral.crossfade_window(512, overlap_frames=256), hump, atol=1e-7)
    with pytest.raises(ValueError, match="257"):
        spectral.crossfade_window(512, overlap_frames=257)


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("samples", [1, 777, 512 * 256 * 3 + 101])
def test_mask_of_ones_reproduces_the_input(pass_through_model, channels, samples):
    audio = music_like(channels, samples, 44100, seed=samples)
    out = Denoiser(pass_through_model, device="cpu").denoise(audio, 44100, strength_db=0)
    assert out.shape == audio.shape
    if samples > 100:
        assert si_sdr(audio, out) > 60
    else:
        np.testing.assert_allclose(out, audio, atol=1e-5)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 48000, 96000, 192000])
def test_resampling_path_keeps_length_and_rate(pass_through_model, sample_rate):
    audio = music_like(2, int(sample_rate * 1.3) + 7, sample_rate, seed=1)
    out = Denoiser(pass_through_model, device="cpu").denoise(audio, sample_rate)
    assert out.shape == audio.shape
    assert si_sdr(audio, out) > 50


def test_noise_floor_channel_is_a_per_bin_low_quantile_constant_over_time():
    generator = torch.Generator().manual_seed(0)
    magnitude = torch.rand(2, spectral.BINS, 64, generator=generator) * 10
    magnitude[:, 100] *= 100  # a louder bin must get a higher floor
    single = spectral.features(magnitude, noise_floor=False)
    both = spectral.features(magnitude, noise_floor=True)
    assert single.shape == (2, 1, spectral.BINS, 64) and both.shape == (2, 2, spectral.BINS, 64)
    assert torch.equal(both[:, :1], single)
    floor = both[:, 1]
    assert torch.equal(floor, floor[..., :1].expand_as(floor))
    below = (single[:, 0] < floor).float().mean(-1)  # share of frames under the floor, per bin
    assert torch.all((below > 0.03) & (below < 0.15))
    assert torch.all(floor[:, 100, 0] > floor[:, 99, 0])
    # Order of frames does not matter; a stationary bin's floor does not depend on the frame count.
    assert torch.equal(spectral.features(magnitude.flip(-1), noise_floor=True)[:, 1], floor)


def test_a_given_noise_floor_replaces_the_tiles_own_and_must_have_one_value_per_bin():
    generator = torch.Generator().manual_seed(1)
    magnitude = torch.rand(2, spectral.BINS, 64, generator=generator)
    own = spectral.features(magnitude, noise_floor=True)
    assert torch.equal(spectral.features(magnitude, noise_floor=True, floor=spectral.noise_floor(magnitude)), own)
    quieter = spectral.noise_floor(magnitude[0] * 0.01)  # (BINS,): one floor for every example
    given = spectral.features(magnitude, noise_floor=True, floor=quieter)
    assert torch.equal(given[:, 0], own[:, 0])
    assert torch.equal(given[:, 1], quieter[:, None].expand(2, spectral.BINS, 64))
    with pytest.raises(ValueError, match=r"one value per bin \(512\), got \(100,\)"):
        spectral.features(magnitude, noise_floor=True, floor=torch.zeros(100))
