"""Model and training properties: mask range, losses, a short run learns, resume, 2-process DDP."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cassette_denoise import data, spectral
from cassette_denoise.data import PairConfig, empty_quiet_bins, fixed_examples, scan_sources
from cassette_denoise.losses import (
    LOSSES, compressed_plus_linear, gated_log_l1_plus_snr, log_l1_plus_compressed, log_l1_plus_snr, magnitude_snr_loss, mask_mae, output_log_l1,
)
from cassette_denoise.model import UNet, UNetConfig, parameter_count, upsampled_conv, widen
from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.train import TrainConfig, initialise_from, pair_config, spectra_batch, train

from conftest import music_like


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for index in range(5):
        sf.write(folder / f"{index}.flac", music_like(2, 44100 * 4, 44100, seed=index).T, 44100)
    return folder


def test_seed_layout_has_10_down_convolutions_and_1_9_m_parameters_at_width_16():
    model = UNet(UNetConfig(base_width=16))
    down_convs = [m for block in model.down for m in block if isinstance(m, torch.nn.Conv2d)]
    assert len(down_convs) == 10
    assert 1.85e6 < parameter_count(model) < 2.0e6


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_decoder_upsamples_and_convolves_exactly_as_the_seeds_layers_would(memory_format):
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, levels=3, noise_floor_input=True)).eval().to(memory_format=memory_format)
    x = (torch.rand(2, 2, 32, 48) * 2 - 1).contiguous(memory_format=memory_format)
    for up in model.up:  # each block on its own: upsample, pad, 2×2 conv against the one-step version
        block_input = torch.randn(2, up[2].in_channels, 8, 12).contiguous(memory_format=memory_format)
        with torch.no_grad():
            expected = up(block_input)
            got = up[3](upsampled_conv(block_input, up[2]))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert got.is_contiguous(memory_format=memory_format)
    # ... and the whole network against the layers applied one by one.
    skips, h = [], x
    with torch.no_grad():
        for level, block in enumerate(model.down):
            h = block(model.pool(h) if level else h)
            skips.append(h)
        for up, merge, skip in zip(model.up, model.merge, reversed(skips[:-1])):
            h = merge(torch.cat([up(h), skip], dim=1))
        torch.testing.assert_close(model(x), torch.sigmoid(model.head(h)), rtol=1e-5, atol=1e-6)


def test_mask_stays_in_0_1_and_starts_near_pass_through():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4)).eval()
    features = torch.rand(2, 1, 512, 64) * 2 - 1
    mask = model(features)
    assert mask.shape == features.shape
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask.mean() > 0.9  # an untrained model passes (nearly) everything through
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 1, 512, 100))


def test_losses_are_zero_for_a_perfect_mask_and_positive_otherwise():
    noisy = torch.rand(2, 1, 512, 32) + 0.5
    target = noisy * 0.5
    assert mask_mae(torch.full_like(noisy, 0.5), noisy, target) < 1e-6
    for output_loss in (output_log_l1, compressed_plus_linear, log_l1_plus_compressed):
        assert output_loss(torch.full_like(noisy, 0.5), noisy, target) < 1e-5
        assert output_loss(torch.ones_like(noisy), noisy, target) > 0.1
        # Output losses are scale-sensitive: a global gain error is penalised.
        assert output_loss(torch.full_like(noisy, 0.45), noisy, target) > 0.01


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_a_short_run_on_one_batch_lowers_the_loss(corpus, loss_name):
    torch.manual_seed(0)
    noisy, target = fixed_examples(scan_sources(sorted(corpus.glob("*.flac"))), config=PairConfig(crop_frames=32),
                                   count=4, seed=0)
    features, noisy_spectrum, target_spectrum = spectra_batch(noisy, target)
    model = UNet(UNetConfig(base_width=4, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = LOSSES[loss_name](model(features), noisy_spectrum, target_spectrum)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_a_noise_floor_model_initialised_from_a_single_channel_one_computes_the_same_mask(tmp_path):
    torch.manual_seed(0)
    source = UNet(UNetConfig(base_width=4)).eval()
    path = save_model(tmp_path / "source.safetensors", source)
    widened = UNet(UNetConfig(base_width=4, noise_floor_input=True))
    initialise_from(widened, path)
    magnitude = torch.rand(2, spectral.BINS, 64) * 50
    with torch.no_grad():
        expected = source(spectral.model_input(magnitude, noise_floor=False))
        actual = widened.eval()(spectral.model_input(magnitude, noise_floor=True))
    torch.testing.assert_close(actual, expected)
    with pytest.raises(ValueError, match="cannot initialise"):
        initialise_from(UNet(UNetConfig(base_width=2)), path)
    with pytest.raises(ValueError, match="cannot initialise"):
        initialise_from(UNet(UNetConfig(base_width=4, levels=4)), path)


@pytest.mark.parametrize("base_width", [4, 6, 8, 13])
def test_widening_keeps_the_mask_exactly(base_width):
    torch.manual_seed(0)
    narrow = UNet(UNetConfig(base_width=4, noise_floor_input=True)).eval()
    for parameter in narrow.parameters():  # weights that make every channel matter, not the near-constant start
        parameter.data.normal_(std=0.3)
    features = torch.rand(2, 2, 64, 32) * 2 - 1
    wide = widen(narrow, base_width).eval()
    assert wide.config.base_width == base_width
    with torch.no_grad():
        expected, actual = narrow(features, logits=True), wide(features, logits=True)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(ValueError, match="narrower"):
        widen(narrow, 3)


def test_a_wider_model_starts_from_a_narrow_checkpoint_with_its_copies_set_apart(tmp_path):
    torch.manual_seed(0)
    narrow = UNet(UNetConfig(base_width=4)).eval()
    path = save_model(tmp_path / "narrow.safetensors", narrow)
    wide = UNet(UNetConfig(base_width=8))
    initialise_from(wide, path, generator=torch.Generator().manual_seed(0))
    features = torch.rand(1, 1, 64, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(features), narrow(features), rtol=0, atol=1e-3)
    first = wide.down[0][0].weight
    assert not torch.equal(first[:4], first[4:])  # the copies can learn different things


def test_spectra_batch_measures_the_floor_over_the_context_then_crops_the_centre():
    noisy, target = torch.randn(2, 64 * spectral.HOP + spectral.N_FFT), torch.randn(2, 64 * spectral.HOP + spectral.N_FFT)
    full, _, _ = spectra_batch(noisy, target, noise_floor=True)
    cropped, noisy_spectrum, target_spectrum = spectra_batch(noisy, target, noise_floor=True, crop_frames=32)
    assert cropped.shape == (2, 2, spectral.BINS, 32)
    assert noisy_spectrum.shape == target_spectrum.shape == (2, 1, spectral.BINS, 32)
    torch.testing.assert_close(cropped, full[..., 16:48])


def test_magnitude_snr_loss_is_the_error_ratio_in_20_db_units_and_capped_for_a_perfect_mask():
    noisy = torch.rand(2, 1, 512, 32) + 0.5
    target = noisy * 0.5
    # A mask of 0.55 leaves an error 10 % of the target's magnitude: SNR 20 dB -> -1.
    torch.testing.assert_close(magnitude_snr_loss(torch.full_like(noisy, 0.55), noisy, target), torch.tensor(-1.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(magnitude_snr_loss(torch.full_like(noisy, 0.5), noisy, target), torch.tensor(-2.5), atol=1e-3, rtol=0)
    assert log_l1_plus_snr(torch.full_like(noisy, 0.45), noisy, target) > log_l1_plus_snr(
        torch.full_like(noisy, 0.5), noisy, target)


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


def test_gated_loss_asks_for_silence_only_where_the_music_is_buried_under_the_noise():
    noisy = torch.ones(1, 1, 512, 32)
    target = torch.full_like(noisy, 0.5)
    target[..., :16, :] = 0.02  # 34 dB under the noise: counts as absent
    keep = torch.full_like(noisy, 0.55)  # a realistic mask: 20 dB SNR on the audible music
    keep[..., :16, :] = 0.02  # ... and the buried music recovered exactly
    silence = keep.clone()
    silence[..., :16, :] = 0.0
    # The plain log loss wants the buried music back; the gated one prefers silence there.
    assert log_l1_plus_snr(keep, noisy, target) < log_l1_plus_snr(silence, noisy, target)
    assert gated_log_l1_plus_snr(silence, noisy, target) < gated_log_l1_plus_snr(keep, noisy, target)
    # Audible music (6 dB under the noise) is still asked for at its level.
    assert gated_log_l1_plus_snr(keep, noisy, target) < gated_log_l1_plus_snr(keep * 0.5, noisy, target)


def test_logit_penalty_is_zero_inside_the_limit_and_pulls_saturated_logits_back():
    from cassette_denoise.train import logit_penalty

    assert logit_penalty(torch.tensor([-4.9, 0.0, 4.9]), limit=5.0) == 0
    logits = torch.tensor([9.0, -7.0], requires_grad=True)
    penalty = logit_penalty(logits, limit=5.0)
    penalty.backward()
    assert penalty.item() == pytest.approx((16 + 4) / 2)
    assert logits.grad[0] > 0 and logits.grad[1] < 0  # gradient descent moves both towards the range


def tiny_config(corpus: Path, run_dir: Path, **overrides) -> TrainConfig:
    settings = dict(corpus_dir=str(corpus), run_dir=str(run_dir), base_width=2, batch_size=2, crop_frames=32,
                    validation_crop_frames=32, max_steps=4, validate_every_steps=2, validation_examples=2,
                    warmup_steps=1, workers=0, device="cpu")
    return TrainConfig(**{**settings, **overrides})


def test_training_writes_checkpoints_log_and_curve_and_resumes(corpus, tmp_path):
    state = train(tiny_config(corpus, tmp_path / "run"))
    assert state["step"] == 4
    for name in ("best.safetensors", "best.json", "latest.safetensors", "latest.optimizer.safetensors", "log.csv",
                 "curve.png", "sources.json"):
        assert (tmp_path / "run" / name).exists(), name
    sidecar = json.loads((tmp_path / "run" / "best.json").read_text())
    assert sidecar["training"]["config"]["base_width"] == 2 and "validation" in sidecar
    state = train(tiny_config(corpus, tmp_path / "run", max_steps=6), resume=True)
    assert state["step"] == 6
    with open(tmp_path / "run" / "log.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["2", "4", "6"]


def test_a_noise_floor_run_starts_from_a_checkpoint_and_saves_a_two_channel_model(corpus, tmp_path):
    train(tiny_config(corpus, tmp_path / "base", max_steps=2, keep_every_validation=True))
    assert sorted(path.name for path in (tmp_path / "base" / "steps").glob("*.safetensors")) == ["step000002.safetensors"]
    config = tiny_config(corpus, tmp_path / "floor", noise_floor_input=True, context_frames=64, logit_penalty=0.01,
                         init_from=str(tmp_path / "base" / "best.safetensors"))
    assert train(config)["step"] == 4
    sidecar = json.loads((tmp_path / "floor" / "best.json").read_text())
    assert sidecar["config"]["noise_floor_input"] is True


def test_a_coherence_run_starts_from_a_noise_floor_checkpoint_and_saves_a_three_channel_model(corpus, tmp_path):
    train(tiny_config(corpus, tmp_path / "floor", noise_floor_input=True, context_frames=64, max_steps=2))
    config = tiny_config(corpus, tmp_path / "stereo", noise_floor_input=True, context_frames=64, coherence_input=True,
                         stereo_probability=0.5, init_from=str(tmp_path / "floor" / "best.safetensors"))
    assert train(config)["step"] == 4
    sidecar = json.loads((tmp_path / "stereo" / "best.json").read_text())
    assert sidecar["config"]["coherence_input"] is True and sidecar["validation"]["val_si_sdr_db"] > -100
    with pytest.raises(ValueError, match="stereo_probability"):
        tiny_config(corpus, tmp_path / "x", coherence_input=True)
    with pytest.raises(ValueError, match="stereo_probability"):
        tiny_config(corpus, tmp_path / "x", stereo_probability=0.5)


def test_stereo_examples_give_each_track_its_own_hiss_and_mono_ones_the_same_on_both(corpus):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    stereo_noisy, stereo_target = fixed_examples(
        sources, config=PairConfig(crop_frames=64, stereo_probability=1.0), count=2, seed=0)
    assert stereo_noisy.shape == stereo_target.shape == (2, 2, PairConfig(crop_frames=64).crop_samples)
    # Above 5 kHz the tape's noise is its hiss, drawn per track (hum and rumble, shared, lie far lower).
    treble = spectral.bin_frequencies_hz() > 5000
    noise_coherence = spectral.channel_coherence(spectral.stft(stereo_noisy - stereo_target))[:, 0, treble]
    assert torch.all(noise_coherence.flatten(1).median(-1).values < 0.5)
    assert not torch.equal(stereo_target[:, 0], stereo_target[:, 1])
    mono_noisy, mono_target = fixed_examples(
        sources, config=PairConfig(crop_frames=64, stereo_probability=1e-9), count=2, seed=0)
    assert torch.equal(mono_noisy[:, 0], mono_noisy[:, 1]) and torch.equal(mono_target[:, 0], mono_target[:, 1])
    single, _ = fixed_examples(sources, config=PairConfig(crop_frames=64), count=2, seed=0)
    assert single.shape == (2, PairConfig(crop_frames=64).crop_samples)


def test_noise_following_treble_rises_with_each_channels_treble_and_leaves_the_bass_noise_alone():
    from cassette_denoise.data import TREBLE_HZ, noise_following_treble

    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((2, 44100 * 3)) * 1e-3).astype(np.float32)
    music = np.zeros_like(noise)
    music[0, 44100: 44100 + 4410] = rng.standard_normal(4410) * 0.3  # a hi-hat hit on the left track only
    out = noise_following_treble(noise, music, rise_db=6.0)
    np.testing.assert_array_equal(out[1], noise[1])  # no treble: no rise (gain exactly 1)
    spectra, before = spectral.stft(torch.from_numpy(out)), spectral.stft(torch.from_numpy(noise))
    frames = spectra.shape[-1]
    hit = slice(int(1.02 * frames / 3), int(1.08 * frames / 3))
    treble = spectral.bin_frequencies_hz() > 2 * TREBLE_HZ
    rise_db = 20 * torch.log10(spectra[0, treble, hit].abs().mean() / before[0, treble, hit].abs().mean())
    assert 5.0 < rise_db < 6.5
    quiet = slice(int(0.2 * frames), int(0.3 * frames))
    torch.testing.assert_close(spectra[0, :, quiet], before[0, :, quiet], atol=1e-6, rtol=0)
    bass = spectral.bin_frequencies_hz() < TREBLE_HZ / 4
    bass_db = 20 * torch.log10(spectra[0, bass, hit].abs().mean() / before[0, bass, hit].abs().mean())
    assert abs(bass_db) < 0.3


def test_a_coherence_model_initialised_from_a_noise_floor_one_computes_the_same_mask(tmp_path):
    torch.manual_seed(0)
    source = UNet(UNetConfig(base_width=4, noise_floor_input=True)).eval()
    path = save_model(tmp_path / "floor.safetensors", source)
    extended = UNet(UNetConfig(base_width=4, noise_floor_input=True, coherence_input=True))
    initialise_from(extended, path)
    spectra = spectral.stft(torch.randn(2, 63 * spectral.HOP + spectral.N_FFT))
    with torch.no_grad():
        expected = source(spectral.model_input(spectra.abs(), noise_floor=True))
        actual = extended.eval()(spectral.model_input(spectra.abs(), noise_floor=True,
                                                      coherence=spectral.channel_coherence(spectra)))
    torch.testing.assert_close(actual, expected)


def test_band_limited_pairs_keep_the_music_below_the_corner_and_nothing_above(corpus):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    # good-deck-type-ii has no saturation, so its signal path adds no harmonics above the corner.
    config = PairConfig(crop_frames=64, preset="good-deck-type-ii", band_limit_probability=1.0,
                        band_limit_hz=(4000.0, 4000.0))
    _, target = fixed_examples(sources, config=config, count=3, seed=0)
    _, unlimited = fixed_examples(sources, config=PairConfig(crop_frames=64, preset="good-deck-type-ii"), count=3, seed=0)
    magnitude = spectral.stft(target).abs().pow(2).sum(dim=-1)  # (count, BINS)
    reference = spectral.stft(unlimited).abs().pow(2).sum(dim=-1)
    above = torch.arange(spectral.BINS) * 44100 / spectral.N_FFT > 8000
    assert (magnitude[:, above].sum(-1) / reference[:, above].sum(-1)).max() < 10 ** (-40 / 10)
    assert unlimited.abs().max() > 0 and target.abs().max() > 0


def test_rescaled_noise_puts_the_whole_noise_at_the_drawn_ratio_under_the_music(corpus):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    config = PairConfig(crop_frames=64, preset="walkman-ferric", noise_snr_probability=1.0, noise_snr_db=(15.0, 15.0))
    noisy, target = fixed_examples(sources, config=config, count=3, seed=0)
    snr_db = 10 * torch.log10(target.pow(2).mean(-1) / (noisy - target).pow(2).mean(-1))
    torch.testing.assert_close(snr_db, torch.full((3,), 15.0), atol=0.01, rtol=0)
    # The same draws without the rescaling give the same music; only the noise's level differs.
    _, plain_target = fixed_examples(sources, config=dataclasses.replace(config, noise_snr_probability=0.0), count=3, seed=0)
    torch.testing.assert_close(target[0], plain_target[0])


@pytest.fixture
def drawn_presets(monkeypatch) -> list[str]:
    """The preset of every simulation run while the test runs, in order."""
    drawn, sample = [], data.sample_cassette

    def recording_sample(rng, preset):
        drawn.append(preset)
        return sample(rng, preset)

    monkeypatch.setattr(data, "sample_cassette", recording_sample)
    return drawn


def test_a_preset_mixture_draws_each_of_its_presets(corpus, drawn_presets):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    mixture = ("good-deck-type-ii", "walkman-ferric", "worn-tape")
    fixed_examples(sources, config=PairConfig(crop_frames=16, preset=mixture), count=24, seed=0)
    assert set(drawn_presets) == set(mixture)


def test_a_preset_listed_twice_is_drawn_about_twice_as_often(corpus, drawn_presets):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    fixed_examples(sources, config=PairConfig(crop_frames=4, preset=("worn-tape", "training", "worn-tape")),
                   count=90, seed=0)
    share = drawn_presets.count("worn-tape") / len(drawn_presets)
    assert 0.57 < share < 0.77, share  # 2/3 ± 2 sd (0.05 over 90 draws); listed once it would be 1/2


def test_a_mixture_in_a_config_file_becomes_a_tuple_and_unknown_presets_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('corpus_dir = "x"\npreset = ["training", "worn-tape"]\n')
    assert TrainConfig.from_toml(path).preset == ("training", "worn-tape")
    with pytest.raises(ValueError, match="worn-tap'"):
        PairConfig(preset=("training", "worn-tap"))
    with pytest.raises(ValueError, match=r"\(\)"):
        PairConfig(preset=())


def test_a_runs_pair_options_reach_its_pairs():
    config = TrainConfig(corpus_dir="x", preset=("worn-tape", "training"), band_limit_probability=0.25,
                         band_limit_hz=(5000.0, 9000.0), noise_snr_probability=0.75, noise_snr_db=(3.0, 7.0),
                         modulation_sidebands_probability=0.4)
    pairs = pair_config(config, crop_frames=512)
    assert (pairs.crop_frames, pairs.preset, pairs.band_limit_probability, pairs.band_limit_hz) == (
        512, ("worn-tape", "training"), 0.25, (5000.0, 9000.0))
    assert (pairs.noise_snr_probability, pairs.noise_snr_db) == (0.75, (3.0, 7.0))
    assert pairs.modulation_sidebands_probability == 0.4


def test_modulation_sidebands_option_adds_noise_that_follows_the_music(corpus):
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    plain = PairConfig(crop_frames=64, preset="good-deck-type-ii")
    noisy, target = fixed_examples(sources, config=plain, count=4, seed=0)
    with_sidebands = dataclasses.replace(plain, modulation_sidebands_probability=1.0)
    noisy_sb, target_sb = fixed_examples(sources, config=with_sidebands, count=4, seed=0)
    # The first example draws the same music and tape; the sidebands only add noise to it.
    torch.testing.assert_close(target_sb[0], target[0])
    added = (noisy_sb[0] - target_sb[0]) - (noisy[0] - target[0])
    level_db = 10 * torch.log10(added.pow(2).mean() / target[0].pow(2).mean())
    assert -46.0 < level_db < -24.0, level_db  # the drawn -45...-25 dB under the music
    with pytest.raises(ValueError, match="1.5"):
        PairConfig(modulation_sidebands_probability=1.5)


def test_emptying_quiet_bins_removes_what_lies_far_under_the_loudest_and_keeps_the_rest():
    t = np.arange(44100) / 44100
    loud, faint = 0.5 * np.sin(2 * np.pi * 440 * t), 0.5e-4 * np.sin(2 * np.pi * 10_000 * t)  # faint: -80 dB
    audio = np.stack([loud + faint, loud + faint]).astype(np.float32)
    np.testing.assert_allclose(empty_quiet_bins(audio, below_db=1e9), audio, atol=1e-6)  # nothing under: a round trip
    emptied = empty_quiet_bins(audio, below_db=60)
    assert emptied.shape == audio.shape and emptied.dtype == np.float32

    def level_db(x: np.ndarray, hz: float) -> float:
        return 20 * np.log10(np.abs(np.fft.rfft(x[0] * np.hanning(x.shape[-1])))[int(hz)])

    assert abs(level_db(emptied, 440) - level_db(audio, 440)) < 0.01
    assert level_db(emptied, 10_000) < level_db(audio, 10_000) - 20


def test_a_runs_empty_bins_option_reaches_its_pairs_and_empties_every_drawn_example(corpus, monkeypatch):
    config = TrainConfig(corpus_dir="x", empty_bins_probability=0.3, empty_bins_below_db=(40.0, 45.0))
    pairs = pair_config(config, crop_frames=64)
    assert (pairs.empty_bins_probability, pairs.empty_bins_below_db) == (0.3, (40.0, 45.0))
    thresholds, original = [], data.empty_quiet_bins

    def recording(audio, *, below_db):
        thresholds.append(below_db)
        return original(audio, below_db=below_db)

    monkeypatch.setattr(data, "empty_quiet_bins", recording)
    sources = scan_sources(sorted(corpus.glob("*.flac")))
    always = PairConfig(crop_frames=64, preset="good-deck-type-ii", empty_bins_probability=1.0,
                        empty_bins_below_db=(40.0, 45.0))
    fixed_examples(sources, config=always, count=6, seed=0)
    assert len(thresholds) == 6 and all(40.0 <= value <= 45.0 for value in thresholds)
    thresholds.clear()
    fixed_examples(sources, config=dataclasses.replace(always, empty_bins_probability=0.0), count=6, seed=0)
    assert thresholds == []
    with pytest.raises(ValueError, match="1.5"):
        PairConfig(empty_bins_probability=1.5)
    with pytest.raises(ValueError, match="80.0, 50.0"):
        PairConfig(empty_bins_below_db=(80.0, 50.0))


def test_noise_snr_options_are_checked():
    with pytest.raises(ValueError, match="1.5"):
        PairConfig(noise_snr_probability=1.5)
    with pytest.raises(ValueError, match="30.0, 10.0"):
        PairConfig(noise_snr_db=(30.0, 10.0))


def test_band_limit_rejects_a_corner_above_nyquist():
    with pytest.raises(ValueError, match="30000"):
        PairConfig(band_limit_probability=0.5, band_limit_hz=(4000.0, 30000.0))


def test_config_file_rejects_unknown_settings(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('corpus_dir = "x"\nlearning_rte = 1e-3\n')
    with pytest.raises(ValueError, match="learning_rte"):
        TrainConfig.from_toml(path)


def test_a_weight_average_is_what_validation_and_checkpoints_hold_and_it_survives_a_resume(corpus, tmp_path):
    # A decay this close to 1 holds the average at the weights after the first step, so every kept
    # checkpoint is (nearly) that model while the raw weights in latest move on.
    config = tiny_config(corpus, tmp_path / "run", weight_average_decay=1 - 1e-9, validate_every_steps=1,
                         max_steps=2, keep_every_validation=True, learning_rate=1e-2)
    train(config)
    train(dataclasses.replace(config, max_steps=3), resume=True)
    steps = [load_model(tmp_path / "run" / "steps" / f"step{step:06d}.safetensors")[0].state_dict()
             for step in (1, 2, 3)]
    raw = load_model(tmp_path / "run" / "latest.safetensors")[0].state_dict()
    for name, first in steps[0].items():
        torch.testing.assert_close(steps[1][name], first, rtol=0, atol=1e-6)
        torch.testing.assert_close(steps[2][name], first, rtol=0, atol=1e-6)  # the resumed run kept the average
    assert max(float((raw[name] - steps[0][name]).abs().max()) for name in raw) > 1e-4  # the raw weights moved on
    with pytest.raises(ValueError, match="1.5"):
        dataclasses.replace(config, weight_average_decay=1.5)


def test_a_config_file_extends_another_and_overrides_only_what_it_states(tmp_path):
    (tmp_path / "base.toml").write_text('corpus_dir = "x"\nrun_dir = "runs/base"\nlearning_rate = 1e-3\nseed = 3\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "middle.toml").write_text('extends = "../base.toml"\nlearning_rate = 2e-4\n')
    (tmp_path / "sub" / "leaf.toml").write_text('extends = "middle.toml"\nrun_dir = "runs/leaf"\n')
    leaf = TrainConfig.from_toml(tmp_path / "sub" / "leaf.toml")
    base = TrainConfig.from_toml(tmp_path / "base.toml")
    assert leaf == dataclasses.replace(base, run_dir="runs/leaf", learning_rate=2e-4)
    assert TrainConfig.from_toml(tmp_path / "sub" / "leaf.toml", seed=9).seed == 9  # the command line wins


def test_a_config_chain_that_loops_or_names_a_missing_file_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\ncorpus_dir = "x"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ValueError, match="loops"):
        TrainConfig.from_toml(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "nowhere.toml"\ncorpus_dir = "x"\n')
    with pytest.raises(ValueError, match="nowhere.toml"):
        TrainConfig.from_toml(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('extends = ["a.toml"]\ncorpus_dir = "x"\n')
    with pytest.raises(ValueError, match=r"\['a.toml'\]"):
        TrainConfig.from_toml(tmp_path / "d.toml")


def test_two_process_gloo_ddp_run_completes(corpus, tmp_path):
    config = tmp_path / "ddp.toml"
    config.write_text("\n".join(f"{key} = {json.dumps(value)}" for key, value in
                                vars(tiny_config(corpus, tmp_path / "ddp")).items()) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cassette_denoise", "train", "--config", str(config)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stderr[-8000:]
    assert (tmp_path / "ddp" / "best.safetensors").exists()
    with open(tmp_path / "ddp" / "log.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2  # only rank 0 logs


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_is_a_valid_run_config(path):
    config = TrainConfig.from_toml(path)
    assert config.run_dir and config.corpus_dir
    if config.init_from:  # stage 2 of a documented run starts from another shipped config's run
        assert any(TrainConfig.from_toml(other).run_dir == Path(config.init_from).parent.parent.as_posix()
                   for other in path.parent.glob("*.toml")), config.init_from


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(PairConfig)
                                  if field.name.endswith("_probability")])
def test_every_pair_probability_outside_zero_to_one_is_refused_with_its_name_and_value(name):
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\], got 1.5"):
        PairConfig(**{name: 1.5})
    PairConfig(**{name: 1.0})
