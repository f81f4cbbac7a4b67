"""The whine stage: takes out steady tonal lines at 0.3-5.5 kHz that hold through a window, following the tape's
speed drift, and leaves music (notes that come and go, even a sustained one that swells) alone."""

import numpy as np
import pytest

from cassette_denoise.metrics import si_sdr
from cassette_denoise.simulate.families import TonalLines, TonalLinesParams
from cassette_denoise.whine import MIN_WINDOW_SAMPLES, WhineRemover

RATE = 44100


def _whine(seconds: float, frequencies_hz: tuple[float, ...], *, level_dbfs: float = -40.0,
           drift_percent: float = 0.3, drift_hz: float = 0.2) -> np.ndarray:
    """Lines at ``frequencies_hz``, each ``level_dbfs``, drifting together, the same on two channels."""
    params = TonalLinesParams(frequencies_hz=frequencies_hz, levels_dbfs=(level_dbfs,) * len(frequencies_hz),
                              phases_rad=tuple(np.linspace(0.3, 2.0, len(frequencies_hz))),
                              drift_percent=drift_percent, drift_hz=drift_hz, drift_phase_rad=0.7)
    return TonalLines.render(params, channels=2, samples=int(seconds * RATE), sample_rate=RATE).astype(np.float64)


def _melody(seconds: float, *, seed: int) -> np.ndarray:
    """Notes of 0.3-1.5 s on an equal-tempered scale, each with decaying partials, plus a little noise, stereo."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    out, start = np.zeros(samples), 0
    while start < samples:
        length = min(int(rng.uniform(0.3, 1.5) * RATE), samples - start)
        t = np.arange(length) / RATE
        fundamental = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
        out[start: start + length] = sum(0.05 / order * np.exp(-t * rng.uniform(0.5, 3.0))
                                         * np.sin(2 * np.pi * order * fundamental * t + rng.uniform(0, 6.3))
                                         for order in range(1, 7))
        start += length
    out += 1e-4 * rng.standard_normal(samples)
    return np.stack([out, 0.8 * out])


def _run(audio: np.ndarray, *, block: int) -> tuple[np.ndarray, list[float]]:
    remover = WhineRemover(channels=audio.shape[0], sample_rate=RATE)
    pieces = [remover.process(audio[:, start: start + block].astype(np.float32))
              for start in range(0, audio.shape[1], block)]
    return np.concatenate([*pieces, remover.finish()], axis=1), remover.found_hz


@pytest.mark.parametrize("seconds", [10.0, 31.0])
def test_a_drifting_whine_under_music_comes_out_and_the_music_stays(seconds):
    music = _melody(seconds, seed=1)
    whine = _whine(seconds, (1234.0, 3150.0), drift_percent=0.4)
    out, found = _run(music + whine, block=40_000)
    assert out.shape == music.shape
    # Reported as detected: within the drift allowance and a detection bin (5.4 Hz) of the mean frequency.
    assert len(found) == 2 and all(min(abs(f - true) for f in found) < 0.006 * true + 6 for true in (1234, 3150))
    # Before, the lines are nearly as loud as the music; after, what is left of them is far below it.
    assert si_sdr(music, out) > si_sdr(music, music + whine) + 25


def test_music_alone_passes_bit_for_bit():
    music = _melody(25.0, seed=2).astype(np.float32)
    out, found = _run(music, block=30_000)
    assert found == []
    np.testing.assert_array_equal(out, music)


def test_a_sustained_note_that_swells_is_left():
    t = np.arange(int(15 * RATE)) / RATE
    note = 0.05 * (1 + 0.8 * np.sin(2 * np.pi * 0.25 * t)) * np.sin(2 * np.pi * 880.0 * t)  # 880 Hz, swelling 19 dB
    audio = np.stack([note, note]).astype(np.float32)
    out, found = _run(audio, block=50_000)
    assert found == []
    np.testing.assert_array_equal(out, audio)


def test_streaming_in_any_blocks_gives_the_same_output():
    audio = _melody(20.0, seed=3) + _whine(20.0, (2000.0,))
    whole, _ = _run(audio, block=audio.shape[1])
    pieces, _ = _run(audio, block=12_345)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_a_stream_too_short_to_tell_is_left_alone():
    seconds = (MIN_WINDOW_SAMPLES - 1) / RATE
    audio = (_melody(seconds, seed=4) + _whine(seconds, (1500.0,))).astype(np.float32)
    out, found = _run(audio, block=10_000)
    assert found == []
    np.testing.assert_array_equal(out, audio)


def test_blocks_of_the_wrong_shape_are_refused():
    remover = WhineRemover(channels=2, sample_rate=RATE)
    with pytest.raises(ValueError, match=r"\(2, samples\) block, got shape \(3, 10\)"):
        remover.process(np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError, match="8000"):
        WhineRemover(channels=1, sample_rate=8000)


def test_files_report_the_whine_taken_out_and_keep_whine_keeps_it(tmp_path, pass_through_model):
    import soundfile as sf

    from cassette_denoise.checkpoint import save_model
    from cassette_denoise.cli import main
    from cassette_denoise.denoiser import Denoiser

    music = _melody(14.0, seed=5)
    source = tmp_path / "whine.wav"
    sf.write(source, (music + _whine(14.0, (2500.0,))).T, RATE, subtype="FLOAT")
    result = Denoiser(pass_through_model, device="cpu").denoise_file(source, tmp_path / "out.wav", strength_db=0)
    assert len(result.whine_hz) == 1 and abs(result.whine_hz[0] - 2500) < 0.006 * 2500 + 6
    # The pass-through model leaves the signal path alone: the command with and without the stage.
    model = save_model(tmp_path / "pass.safetensors", pass_through_model)
    outputs = {}
    for name, options in (("removed", []), ("kept", ["--keep-whine"])):
        outputs[name] = tmp_path / f"{name}.wav"
        assert main(["denoise", str(source), "-o", str(outputs[name]), "--model", str(model), "--strength-db", "0",
                     "--device", "cpu", *options]) == 0
    removed, kept = (sf.read(outputs[name], dtype="float64")[0].T for name in ("removed", "kept"))
    assert si_sdr(music, removed) > si_sdr(music, kept) + 20
