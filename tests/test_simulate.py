"""The cassette simulator: deterministic per seed, hits its requested levels, keeps target and noisy aligned."""

import json

import numpy as np
import pytest
import scipy.signal

from cassette_denoise.audio import read_audio, write_audio
from cassette_denoise.cli import main
from cassette_denoise.simulate import (
    NOISES,
    PRESETS,
    SIGNAL_PATH,
    CassetteParams,
    DropoutEvent,
    DropoutsParams,
    Hiss,
    HissParams,
    HumParams,
    ModulationSidebands,
    ModulationSidebandsParams,
    RollOffParams,
    RumbleParams,
    SpeedParams,
    apply_cassette,
    params_from_json,
    params_to_json,
    sample_cassette,
    simulate,
)

SR = 44_100


def music(seconds: float = 1.0, *, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """Stereo test 'music': a few decaying partials and a little noise, float32 (2, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    channels = []
    for _ in range(2):
        partials = enumerate((220.0, 330.0, 1760.0, 5000.0), 1)
        tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in partials)
        channels.append(tone * (0.6 + 0.4 * np.cos(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(t.size))
    x = np.stack(channels)
    return (level * x / np.sqrt(np.mean(x**2))).astype(np.float32)


def level_dbfs(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def hiss(level_db: float, *, reference: str = "dbfs", dolby_b: bool = False, seed: int = 1) -> HissParams:
    return HissParams(level_db=level_db, level_reference=reference, turnover_hz=1330.0, shelf_db=10.0,
                      lowpass_hz=18_000.0, dolby_b=dolby_b, seed=seed)


def band_db(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    """Mean power density in a band (dB), averaged over channels."""
    freqs, psd = scipy.signal.welch(x, SR, nperseg=4096)
    return 10 * np.log10(np.mean(psd[..., (freqs >= low_hz) & (freqs < high_hz)]))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_same_seed_gives_identical_samples_and_another_seed_differs(preset):
    clean = music(0.5)
    first = simulate(clean, SR, rng=np.random.default_rng(7), preset=preset)
    again = simulate(clean, SR, rng=np.random.default_rng(7), preset=preset)
    other = simulate(clean, SR, rng=np.random.default_rng(8), preset=preset)
    np.testing.assert_array_equal(first.noisy, again.noisy)
    np.testing.assert_array_equal(first.target, again.target)
    assert not np.array_equal(first.noisy, other.noisy)
    assert first.noisy.shape == first.target.shape == clean.shape
    assert first.noisy.dtype == first.target.dtype == np.float32
    assert np.isfinite(first.noisy).all()


@pytest.mark.parametrize("name", list(SIGNAL_PATH) + list(NOISES))
def test_every_effect_keeps_shape_dtype_and_finiteness(name):
    effect = {**SIGNAL_PATH, **NOISES}[name]
    params = effect.sample_params(np.random.default_rng(3))
    clean = music(0.3)
    out = effect.apply(clean, SR, params)
    assert out.shape == clean.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, effect.apply(clean, SR, params))


def test_apply_is_pure_and_leaves_the_input_alone():
    clean = music(0.5)
    kept = clean.copy()
    params = sample_cassette(np.random.default_rng(1), "worn-tape")
    first, second = apply_cassette(clean, SR, params), apply_cassette(clean, SR, params)
    np.testing.assert_array_equal(first.noisy, second.noisy)
    np.testing.assert_array_equal(clean, kept)


@pytest.mark.parametrize("level", [-75.0, -55.0, -40.0])
def test_hiss_hits_absolute_level(level):
    result = apply_cassette(music(), SR, CassetteParams(hiss=hiss(level)))
    for channel in result.noisy - result.target:
        assert level_dbfs(channel) == pytest.approx(level, abs=1.0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 35.0])
def test_hiss_hits_level_relative_to_the_music(snr_db):
    clean = music(level=0.03)
    result = apply_cassette(clean, SR, CassetteParams(hiss=hiss(snr_db, reference="snr")))
    assert level_dbfs(clean) - level_dbfs(result.noisy - result.target) == pytest.approx(snr_db, abs=1.0)


def test_hiss_is_independent_per_channel_and_rises_above_the_eq_turnover():
    noise = Hiss.noise(np.zeros((2, 2 * SR), np.float32), SR, hiss(-50.0))
    assert abs(np.corrcoef(noise)[0, 1]) < 0.05
    # 10 dB shelf above 1.33 kHz: 4-8 kHz sits ~9 dB above 200-800 Hz.
    assert band_db(noise, 4000, 8000) - band_db(noise, 200, 800) > 6.0


def test_dolby_b_lowers_hiss_above_1_khz_in_quiet_passages():
    silence = np.zeros((2, SR), np.float32)
    plain, decoded = Hiss.noise(silence, SR, hiss(-50.0)), Hiss.noise(silence, SR, hiss(-50.0, dolby_b=True))
    assert band_db(plain, 4000, 8000) - band_db(decoded, 4000, 8000) == pytest.approx(10.0, abs=1.5)
    assert band_db(plain, 50, 300) - band_db(decoded, 50, 300) < 1.0


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_hum_is_at_the_mains_frequency_and_its_harmonics(mains_hz):
    params = sample_cassette(np.random.default_rng(0), "worn-tape").hum
    params = HumParams(mains_hz=mains_hz, level_dbfs=-60.0, harmonics_db=params.harmonics_db,
                       phases_rad=params.phases_rad)
    noise = apply_cassette(np.zeros((2, SR), np.float32), SR, CassetteParams(hum=params)).noisy
    spectrum = np.abs(np.fft.rfft(noise[0]))  # 1 s: 1 Hz bins, integer frequencies do not leak
    peaks = np.sort(np.argsort(spectrum)[-len(params.harmonics_db):])
    np.testing.assert_array_equal(peaks, mains_hz * np.arange(1, len(params.harmonics_db) + 1))
    assert level_dbfs(noise) == pytest.approx(-60.0, abs=0.1)


def test_rumble_stays_below_its_corner():
    silence = np.zeros((2, 2 * SR), np.float32)
    noise = apply_cassette(silence, SR, CassetteParams(rumble=RumbleParams(-60.0, 60.0, 4))).noisy
    assert level_dbfs(noise) == pytest.approx(-60.0, abs=0.1)
    assert band_db(noise, 20, 60) - band_db(noise, 300, 1000) > 40.0


def test_target_and_noisy_are_sample_aligned():
    clean = music()
    only_hiss = apply_cassette(clean, SR, CassetteParams(hiss=hiss(-30.0)))
    np.testing.assert_array_equal(only_hiss.target, clean)
    np.testing.assert_allclose(only_hiss.noisy - only_hiss.target, Hiss.noise(clean, SR, hiss(-30.0)), atol=1e-7)

    tape = CassetteParams(
        speed=SpeedParams(1.0, 0.1, 1.0, 0.05, 10.0, (0.3, 1.2)), rolloff=RollOffParams(9000.0),
        dropouts=DropoutsParams((DropoutEvent(0.4, 0.05, 20.0, None),)), hiss=hiss(-30.0),
    )
    result = apply_cassette(clean, SR, tape)
    residual = result.noisy - result.target
    assert level_dbfs(result.target - clean) > -40  # the signal path changed the music ...
    # ... but the residual is only the noise, computed from the target.
    np.testing.assert_allclose(residual, Hiss.noise(result.target, SR, hiss(-30.0)), atol=1e-6)
    assert abs(np.corrcoef(residual.ravel(), result.target.ravel())[0, 1]) < 0.05


def test_signal_path_alone_adds_no_noise():
    params = sample_cassette(np.random.default_rng(2), "worn-tape")
    params = CassetteParams(**{name: getattr(params, name) for name in SIGNAL_PATH})
    result = apply_cassette(music(0.5), SR, params)
    np.testing.assert_array_equal(result.noisy, result.target)


def test_speed_offset_shifts_pitch_and_keeps_length():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)  # mono, 1-D
    out = apply_cassette(tone, SR, CassetteParams(speed=SpeedParams(2.0, 0.0, 1.0, 0.0, 10.0, (0.0, 0.0)))).target
    assert out.shape == tone.shape
    assert np.argmax(np.abs(np.fft.rfft(out[: SR // 2], SR))) == pytest.approx(1020, abs=1)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_params_round_trip_through_json(preset):
    for seed in range(5):
        params = sample_cassette(np.random.default_rng(seed), preset)
        restored = params_from_json(json.loads(json.dumps(params_to_json(params))))
        assert restored == params


def test_params_from_json_is_strict():
    data = params_to_json(sample_cassette(np.random.default_rng(0), "worn-tape"))
    with pytest.raises(ValueError, match="keys"):
        params_from_json({**data, "extra": None})
    with pytest.raises(ValueError, match="hiss"):
        params_from_json({**data, "hiss": {**data["hiss"], "level_db": "loud"}})


def test_modulation_sidebands_skirt_each_component_at_the_drawn_level():
    t = np.arange(2 * SR) / SR
    tone = np.stack([0.3 * np.sin(2 * np.pi * 9000 * t)] * 2).astype(np.float32)
    params = ModulationSidebandsParams(level_db=-30.0, bandwidth_hz=2000.0, seed=3)
    noise = ModulationSidebands.noise(tone, SR, params)
    assert level_dbfs(noise) - level_dbfs(tone) == pytest.approx(-30.0, abs=0.5)
    # Noise around the tone (up to its bandwidth above it, where a real tape's music has ended) and
    # none far from it: the skirt falls 24 dB per octave of distance beyond the bandwidth.
    assert band_db(noise, 10_000, 11_000) - band_db(noise, 16_000, 20_000) > 40
    assert band_db(noise, 10_000, 11_000) - band_db(noise, 500, 2000) > 40
    assert not np.allclose(noise[0], noise[1])  # each track its own stretch of tape
    np.testing.assert_array_equal(noise, ModulationSidebands.noise(tone, SR, params))
    silence = np.zeros_like(tone)
    assert not ModulationSidebands.noise(silence, SR, params).any()  # it rides on the signal only


def test_no_preset_draws_modulation_sidebands_so_the_presets_replay_as_before():
    # Sidebands are a training option (data.PairConfig.modulation_sidebands_probability); the presets,
    # which also define the synthetic test set, draw exactly what they drew before it existed.
    for preset in PRESETS:
        assert all(sample_cassette(np.random.default_rng(seed), preset).modulation_sidebands is None
                   for seed in range(5))
    drawn = ModulationSidebands.sample_params(np.random.default_rng(0))
    assert -45.0 <= drawn.level_db <= -25.0 and 1000.0 <= drawn.bandwidth_hz <= 5000.0


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset"):
        sample_cassette(np.random.default_rng(0), "reel-to-reel")


def test_training_preset_draws_both_hiss_level_references():
    references = {sample_cassette(np.random.default_rng(seed), "training").hiss.level_reference for seed in range(20)}
    assert references == {"dbfs", "snr"}


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "in.wav"
    write_audio(path, music(1.0, level=0.2), SR)
    return path


def test_simulate_cli_same_seed_byte_identical_other_seed_differs(tmp_path, recording):
    outputs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.wav"
        args = ["simulate", str(recording), "-o", str(out), "--preset", "worn-tape", "--seed", str(seed),
                "--target-out", str(tmp_path / f"{name}_target.wav"), "--params-out", str(tmp_path / f"{name}.json")]
        assert main(args) == 0
        outputs[name] = out.read_bytes()
    assert outputs["a"] == outputs["b"] != outputs["c"]
    assert (tmp_path / "a_target.wav").read_bytes() == (tmp_path / "b_target.wav").read_bytes()
    record = json.loads((tmp_path / "a.json").read_text())
    assert params_from_json(record["params"]) == sample_cassette(np.random.default_rng(3), "worn-tape")
    audio, rate = read_audio(tmp_path / "a.wav")
    assert rate == SR and audio.shape == (2, SR)


def test_simulate_cli_refuses_to_overwrite_the_input(recording, capsys):
    before = recording.read_bytes()
    assert main(["simulate", str(recording), "-o", str(recording)]) == 2
    assert "input" in capsys.readouterr().err
    assert recording.read_bytes() == before


def test_simulate_cli_refuses_existing_outputs_without_overwrite(tmp_path, recording, capsys):
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    assert main(["simulate", str(recording), "-o", str(out)]) == 2
    assert "out.wav: exists (use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["simulate", str(recording), "-o", str(out), "--overwrite"]) == 0
    assert read_audio(out)[0].shape == (2, SR)
