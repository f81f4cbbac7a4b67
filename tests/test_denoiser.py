import numpy as np
import pytest
import torch

from cassette_denoise import spectral
from cassette_denoise.checkpoint import CheckpointError, load_model, save_model
from cassette_denoise.denoiser import TREBLE_RAMP_HZ, Denoiser, mask_exponents

from conftest import music_like, stream_in_random_blocks


def test_streaming_in_random_blocks_equals_whole_array(denoiser):
    audio = music_like(2, 44100 * 9 + 333, 44100, seed=2)
    whole = denoiser.denoise(audio, 44100)
    stream = denoiser.stream(channels=2, sample_rate=44100)
    np.testing.assert_array_equal(stream_in_random_blocks(stream, audio, max_block=40_000, seed=0), whole)


def test_streaming_equals_whole_with_resampling(denoiser):
    audio = music_like(1, 48000 * 7 + 5, 48000, seed=3)
    whole = denoiser.denoise(audio, 48000)
    stream = denoiser.stream(channels=1, sample_rate=48000)
    pieces = [stream.process(audio[:, s: s + 12_345]) for s in range(0, audio.shape[1], 12_345)]
    streamed = np.concatenate([*pieces, stream.finish()], axis=1)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_mono_1d_input_gives_1d_output(denoiser):
    assert denoiser.denoise(music_like(1, 5000, 44100)[0], 44100).shape == (5000,)


@pytest.mark.parametrize("bad", [np.zeros((2, 0)), np.full((1, 100), np.nan), np.full((1, 100), np.inf)])
def test_bad_arrays_are_refused(denoiser, bad):
    with pytest.raises(ValueError):
        denoiser.denoise(bad, 44100)


def test_strength_floors_the_attenuation(random_model):
    denoiser = Denoiser(random_model, device="cpu")
    audio = music_like(1, 44100 * 2, 44100)
    untouched = denoiser.denoise(audio, 44100, strength_db=0)
    np.testing.assert_allclose(untouched, audio, atol=1e-5)
    with pytest.raises(ValueError):
        denoiser.denoise(audio, 44100, strength_db=-3)


def test_save_then_load_gives_identical_output(tmp_path, random_model):
    path = save_model(tmp_path / "m.safetensors", random_model, metadata={"note": "test"})
    loaded, sidecar = load_model(path)
    audio = music_like(2, 30_000, 44100)
    np.testing.assert_array_equal(Denoiser(loaded, device="cpu").denoise(audio, 44100),
                                  Denoiser(random_model, device="cpu").denoise(audio, 44100))
    assert sidecar["note"] == "test" and sidecar["config"]["base_width"] == 2


def test_loading_is_strict_and_refuses_non_finite_weights(tmp_path, random_model):
    import copy
    import json

    import torch

    path = save_model(tmp_path / "m.safetensors", random_model)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["config"]["base_width"] = 4
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)
    broken = copy.deepcopy(random_model)
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        save_model(tmp_path / "bad.safetensors", broken)
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_noise_floor_model_streams_identically_and_loads_back(tmp_path):
    import torch

    from cassette_denoise.model import UNet, UNetConfig

    torch.manual_seed(1)
    model = UNet(UNetConfig(base_width=2, noise_floor_input=True)).eval()
    path = save_model(tmp_path / "floor.safetensors", model)
    denoiser = Denoiser.from_checkpoint(path, device="cpu")
    assert denoiser.model.config.noise_floor_input
    audio = music_like(2, 44100 * 8 + 7, 44100, seed=4)
    whole = denoiser.denoise(audio, 44100)
    stream = denoiser.stream(channels=2, sample_rate=44100)
    pieces = [stream.process(audio[:, s: s + 30_001]) for s in range(0, audio.shape[1], 30_001)]
    np.testing.assert_array_equal(np.concatenate([*pieces, stream.finish()], axis=1), whole)
    assert not np.allclose(whole, audio, atol=1e-3)  # the random model does change the audio
    # from_pretrained takes a path as well: a user's own model is loaded exactly like this one.
    np.testing.assert_array_equal(Denoiser.from_pretrained(path, device="cpu").denoise(audio, 44100), whole)


def test_mask_exponent_comes_from_the_sidecar_and_keeps_a_full_mask_whole(tmp_path, random_model, pass_through_model):
    audio = music_like(2, 44100 * 3, 44100, seed=5)
    path = save_model(tmp_path / "cal.safetensors", random_model, metadata={"calibration": {"mask_exponent": 2.0}})
    calibrated = Denoiser.from_checkpoint(path, device="cpu")
    assert calibrated.mask_exponent == 2.0
    np.testing.assert_array_equal(calibrated.denoise(audio, 44100),
                                  Denoiser(random_model, device="cpu", mask_exponent=2.0).denoise(audio, 44100))
    raw = Denoiser(random_model, device="cpu")
    assert raw.mask_exponent == 1.0
    # A sharper mask attenuates more wherever the mask is below 1.
    assert np.sum(calibrated.denoise(audio, 44100) ** 2) < np.sum(raw.denoise(audio, 44100) ** 2)
    # ... and a mask of 1 stays 1: the signal path alone is exact.
    sharp = Denoiser(pass_through_model, device="cpu", mask_exponent=3.0).denoise(audio, 44100)
    np.testing.assert_allclose(sharp, audio, atol=1e-5)


def test_the_treble_exponent_ramps_from_the_main_one_and_only_sharpens_the_treble(tmp_path, random_model,
                                                                                  pass_through_model):
    exponents = mask_exponents(2.0, 4.0)[:, 0]
    frequencies = spectral.bin_frequencies_hz(44100)
    low, high = TREBLE_RAMP_HZ
    assert torch.all(exponents[frequencies <= low] == 2.0) and torch.all(exponents[frequencies >= high] == 4.0)
    assert torch.all(exponents.diff() >= 0)
    assert mask_exponents(2.0, 2.0) == 2.0  # one exponent: the plain number, exactly as before

    audio = music_like(1, 44100 * 3, 44100, seed=6)[0]
    path = save_model(tmp_path / "cal.safetensors", random_model,
                      metadata={"calibration": {"mask_exponent": 2.0, "treble_mask_exponent": 4.0}})
    treble = Denoiser.from_checkpoint(path, device="cpu")
    assert (treble.mask_exponent, treble.treble_mask_exponent) == (2.0, 4.0)
    plain = Denoiser(random_model, device="cpu", mask_exponent=2.0)
    assert plain.treble_mask_exponent == 2.0
    sharp_out, plain_out = treble.denoise(audio, 44100), plain.denoise(audio, 44100)

    def band_energy(signal, low_hz, high_hz):
        spectrum = np.abs(np.fft.rfft(signal)) ** 2
        frequency = np.fft.rfftfreq(signal.shape[-1], 1 / 44100)
        return spectrum[(frequency >= low_hz) & (frequency < high_hz)].sum()

    # Below the ramp the two agree (up to the window's leakage), above it the sharper mask takes more out.
    np.testing.assert_allclose(band_energy(sharp_out, 0, 3000), band_energy(plain_out, 0, 3000), rtol=1e-3)
    assert band_energy(sharp_out, 8000, 22050) < 0.9 * band_energy(plain_out, 8000, 22050)
    # A mask of 1 stays 1 in the treble too.
    whole = Denoiser(pass_through_model, device="cpu", mask_exponent=2.0, treble_mask_exponent=6.0)
    np.testing.assert_allclose(whole.denoise(audio, 44100), audio, atol=1e-5)


@pytest.mark.parametrize("exponent", [0.0, -1.0, 100.0])
def test_an_out_of_range_mask_exponent_is_refused(random_model, exponent):
    with pytest.raises(ValueError, match=str(exponent)):
        Denoiser(random_model, device="cpu", mask_exponent=exponent)
    with pytest.raises(ValueError, match=f"treble_mask_exponent.*{exponent}"):
        Denoiser(random_model, device="cpu", mask_exponent=2.0, treble_mask_exponent=exponent)


@pytest.mark.parametrize("calibration", [{"mask_exponent": "two"}, {"mask_exponent": 2.0, "treble_mask_exponent": "two"}])
def test_a_malformed_calibration_in_the_sidecar_is_refused_with_the_file_named(tmp_path, random_model, calibration):
    path = save_model(tmp_path / "m.safetensors", random_model, metadata={"calibration": calibration})
    with pytest.raises(CheckpointError, match="m.safetensors: bad calibration.*two"):
        load_model(path)


def test_the_hum_stage_runs_before_the_model_and_can_be_switched_off(pass_through_model):
    rate, samples = 44100, 44100 * 10
    audio = music_like(2, samples, rate, seed=6)
    t = np.arange(samples) / rate
    hum = sum(level * np.sin(2 * np.pi * 60.0 * order * t) for order, level in [(1, 2e-3), (3, 3e-3), (5, 1e-3)])
    noisy = (audio + hum).astype(np.float32)
    kept = Denoiser(pass_through_model, device="cpu", remove_hum=False).denoise(noisy, rate)
    np.testing.assert_allclose(kept, noisy, atol=1e-5)
    removed = Denoiser(pass_through_model, device="cpu").denoise(noisy, rate)
    assert removed.shape == noisy.shape
    residual_db = 10 * np.log10(np.mean((removed - audio) ** 2) / np.mean(hum**2))
    assert residual_db < -15, residual_db


def test_channels_side_by_side_give_what_one_after_the_other_gives(random_model, monkeypatch):
    from cassette_denoise import tiles

    audio = music_like(2, 44100 * 8, 44100, seed=21)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert tiles.channel_workers(2, torch.device("cpu")) == 2
        side_by_side = Denoiser(random_model, device="cpu", remove_hum=False).denoise(audio, 44100)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        assert tiles.channel_workers(2, torch.device("cpu")) == 1
        in_turn = Denoiser(random_model, device="cpu", remove_hum=False).denoise(audio, 44100)
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    np.testing.assert_array_equal(side_by_side, in_turn)
    assert tiles.channel_workers(2, torch.device("cuda")) == 1  # a GPU takes the channels as one batch


def test_streams_leave_no_channel_worker_threads_behind(random_model):
    import gc
    import threading

    audio = music_like(2, 44100 * 7, 44100, seed=22)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        denoiser = Denoiser(random_model, device="cpu", remove_hum=False, remove_whine=False)
        baseline = threading.active_count()
        for _ in range(3):  # finished streams shut their workers down
            denoiser.denoise(audio, 44100)
        assert threading.active_count() == baseline
        for _ in range(3):  # abandoned ones (an error mid-file) let them go once dropped
            stream = denoiser.stream(channels=2, sample_rate=44100)
            stream.process(audio)
            assert threading.active_count() > baseline
            del stream
            gc.collect()
        for _ in range(100):
            if threading.active_count() == baseline:
                break
            threading.Event().wait(0.05)
        assert threading.active_count() == baseline
    finally:
        torch.set_num_threads(before)
