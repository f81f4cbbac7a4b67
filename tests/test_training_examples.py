"""Training examples made on the fly: what each treatment does to the noise and the music."""

import dataclasses

import numpy as np
import pytest
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import AudioError
from cassette_denoise.training import examples
from cassette_denoise.training.examples import (
    TREBLE_HZ,
    PairConfig,
    crop_samples,
    empty_quiet_bins,
    fixed_examples,
    noise_following_treble,
    scan_sources,
    snr_gain,
)

PLAIN = PairConfig(preset="good-deck-type-ii", noise_snr_probability=0.0)


@pytest.fixture(scope="module")
def sources(music_folder):
    return scan_sources(sorted(music_folder.glob("*.flac")), split="train")


def test_examples_are_mono_crops_of_the_asked_length_and_reproducible(sources):
    noisy, target = fixed_examples(sources, config=PairConfig(), frames=64, count=3, seed=0)
    assert noisy.shape == target.shape == (3, crop_samples(64)) and noisy.dtype == torch.float32
    assert spectral.frame_count(crop_samples(64)) >= 64
    again, _ = fixed_examples(sources, config=PairConfig(), frames=64, count=3, seed=0)
    assert torch.equal(noisy, again)
    assert not torch.equal(noisy, target)


def test_a_split_without_files_is_named_in_the_error():
    with pytest.raises(AudioError, match="no clean validation files"):
        scan_sources([], split="validation")


def test_noise_following_treble_rises_with_each_channels_treble_and_leaves_the_bass_noise_alone():
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


def test_snr_gain_sets_the_ratio_and_leaves_silence_alone():
    rng = np.random.default_rng(0)
    music, noise = rng.standard_normal(1000), rng.standard_normal(1000) * 0.3
    scaled = noise * snr_gain(music, noise, snr_db=20.0)
    assert 10 * np.log10(np.mean(music**2) / np.mean(scaled**2)) == pytest.approx(20.0)
    assert snr_gain(np.zeros(10), noise[:10], snr_db=20.0) == snr_gain(music[:10], np.zeros(10), snr_db=20.0) == 1.0


def test_rescaled_noise_puts_the_whole_noise_at_the_drawn_ratio_under_the_music(sources):
    config = PairConfig(preset="walkman-ferric", noise_snr_probability=1.0, noise_snr_db=(15.0, 15.0))
    noisy, target = fixed_examples(sources, config=config, frames=64, count=3, seed=0)
    snr_db = 10 * torch.log10(target.pow(2).mean(-1) / (noisy - target).pow(2).mean(-1))
    torch.testing.assert_close(snr_db, torch.full((3,), 15.0), atol=0.01, rtol=0)
    # The same draws without the rescaling give the same music; only the noise's level differs.
    _, plain_target = fixed_examples(sources, config=dataclasses.replace(config, noise_snr_probability=0.0),
                                     frames=64, count=3, seed=0)
    torch.testing.assert_close(target[0], plain_target[0])


@pytest.fixture
def drawn_presets(monkeypatch) -> list[str]:
    """The preset of every simulation run while the test runs, in order."""
    drawn, sample = [], examples.sample_cassette

    def recording_sample(rng, preset):
        drawn.append(preset)
        return sample(rng, preset)

    monkeypatch.setattr(examples, "sample_cassette", recording_sample)
    return drawn


def test_a_preset_mixture_draws_each_of_its_presets(sources, drawn_presets):
    mixture = ("good-deck-type-ii", "walkman-ferric", "worn-tape")
    fixed_examples(sources, config=PairConfig(preset=mixture), frames=16, count=24, seed=0)
    assert set(drawn_presets) == set(mixture)


def test_a_preset_listed_twice_is_drawn_about_twice_as_often(sources, drawn_presets):
    fixed_examples(sources, config=PairConfig(preset=("worn-tape", "training", "worn-tape"), noise_snr_probability=0.0),
                   frames=4, count=90, seed=0)
    share = drawn_presets.count("worn-tape") / len(drawn_presets)
    assert 0.57 < share < 0.77, share  # 2/3 ± 2 sd (0.05 over 90 draws); listed once it would be 1/2


def test_unknown_or_no_presets_are_refused_with_the_value():
    with pytest.raises(ValueError, match="worn-tap'"):
        PairConfig(preset=("training", "worn-tap"))
    with pytest.raises(ValueError, match=r"\(\)"):
        PairConfig(preset=())


def test_modulation_sidebands_option_adds_noise_that_follows_the_music(sources):
    noisy, target = fixed_examples(sources, config=PLAIN, frames=64, count=4, seed=0)
    with_sidebands = dataclasses.replace(PLAIN, modulation_sidebands_probability=1.0)
    noisy_sb, target_sb = fixed_examples(sources, config=with_sidebands, frames=64, count=4, seed=0)
    # The first example draws the same music and tape; the sidebands only add noise to it.
    torch.testing.assert_close(target_sb[0], target[0])
    added = (noisy_sb[0] - target_sb[0]) - (noisy[0] - target[0])
    level_db = 10 * torch.log10(added.pow(2).mean() / target[0].pow(2).mean())
    assert -46.0 < level_db < -24.0, level_db  # the drawn -45...-25 dB under the music


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


def test_empty_bins_option_empties_every_drawn_example_and_no_other(sources, monkeypatch):
    thresholds, original = [], examples.empty_quiet_bins

    def recording(audio, *, below_db):
        thresholds.append(below_db)
        return original(audio, below_db=below_db)

    monkeypatch.setattr(examples, "empty_quiet_bins", recording)
    always = dataclasses.replace(PLAIN, empty_bins_probability=1.0, empty_bins_below_db=(40.0, 45.0))
    fixed_examples(sources, config=always, frames=64, count=6, seed=0)
    assert len(thresholds) == 6 and all(40.0 <= value <= 45.0 for value in thresholds)
    thresholds.clear()
    fixed_examples(sources, config=dataclasses.replace(always, empty_bins_probability=0.0), frames=64, count=6, seed=0)
    assert thresholds == []


def test_recorded_noise_is_added_at_a_ratio_in_its_range(sources):
    rng = np.random.default_rng(1)
    recording = [(rng.standard_normal((1, 44100)) * 0.1).astype(np.float32)]
    config = dataclasses.replace(PLAIN, recorded_noise_probability=1.0, recorded_noise_snr_db=(10.0, 10.0))
    noisy, target = fixed_examples(sources, config=config, frames=64, count=2, seed=0, noises=recording)
    plain_noisy, _ = fixed_examples(sources, config=PLAIN, frames=64, count=2, seed=0)
    added = noisy[0] - plain_noisy[0]
    # The recording dwarfs the tape's own noise here, so the whole added noise sits near 10 dB down.
    assert 8.5 < 10 * torch.log10(target[0].pow(2).mean() / added.pow(2).mean()) < 11.5


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(PairConfig)
                                  if field.name.endswith("_probability")])
def test_every_pair_probability_outside_zero_to_one_is_refused_with_its_name_and_value(name):
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\], got 1.5"):
        PairConfig(**{name: 1.5})
    PairConfig(**{name: 1.0})


@pytest.mark.parametrize("name", ["recorded_noise_snr_db", "noise_snr_db", "empty_bins_below_db",
                                  "noise_follows_treble_db", "noise_family_snr_db"])
def test_every_reversed_range_is_refused_with_its_name_and_value(name):
    with pytest.raises(ValueError, match=rf"{name} must be .*\(80.0, 50.0\)"):
        PairConfig(**{name: (80.0, 50.0)})


def test_family_examples_are_the_clean_music_plus_a_family_noise_at_the_drawn_ratio(sources):
    config = PairConfig(preset="good-deck-type-ii", noise_family_probability=1.0, noise_family=("brown", "whine"),
                        noise_family_snr_db=(12.0, 12.0))
    noisy, target = fixed_examples(sources, config=config, frames=64, count=4, seed=0)
    snr_db = 10 * torch.log10(target.pow(2).mean(-1) / (noisy - target).pow(2).mean(-1))
    torch.testing.assert_close(snr_db, torch.full((4,), 12.0), atol=0.01, rtol=0)
    again, again_target = fixed_examples(sources, config=config, frames=64, count=4, seed=0)
    assert torch.equal(noisy, again) and torch.equal(target, again_target)
    assert not torch.equal(noisy, fixed_examples(sources, config=config, frames=64, count=4, seed=1)[0])


def test_unknown_noise_families_are_refused_with_the_value():
    with pytest.raises(ValueError, match="noise_family must name .*'hiss'"):
        PairConfig(noise_family=("white", "hiss"))


def test_recorded_noise_alone_examples_are_the_clean_music_plus_the_recording_at_the_drawn_ratio(sources):
    rng = np.random.default_rng(2)
    recording = [(rng.standard_normal((2, 44100)) * 0.1).astype(np.float32)]
    config = dataclasses.replace(PLAIN, recorded_noise_alone_probability=1.0, recorded_noise_snr_db=(15.0, 15.0))
    noisy, target = fixed_examples(sources, config=config, frames=64, count=4, seed=0, noises=recording)
    snr_db = 10 * torch.log10(target.pow(2).mean(-1) / (noisy - target).pow(2).mean(-1))
    torch.testing.assert_close(snr_db, torch.full((4,), 15.0), atol=0.01, rtol=0)
    without, _ = fixed_examples(sources, config=config, frames=64, count=4, seed=0)
    assert not torch.equal(without, noisy)  # no recordings: the recipe's simulator examples instead
