"""The hum stage: takes out mains harmonics that hold, leaves music (even a note on a harmonic) alone."""

import numpy as np
import pytest

from cassette_denoise.hum import HumRemover, _phasors

RATE = 44100


def _hum(samples: int, mains_hz: float) -> np.ndarray:
    t = np.arange(samples) / RATE
    return sum(level * np.sin(2 * np.pi * mains_hz * order * t + phase)
               for order, level, phase in [(1, 1e-3, 0.3), (2, 3e-4, 1.0), (3, 1.5e-3, 2.0), (5, 8e-4, 0.5)])


def _music(samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(samples) / RATE
    # Notes off the mains grid, with a swelling level, plus a little broadband noise.
    notes = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (110.0 * 2 ** (3 / 12), 440.0, 659.26))
    return notes * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)) + 1e-4 * rng.standard_normal(samples)


def _run(audio: np.ndarray, *, block: int) -> np.ndarray:
    remover = HumRemover(channels=audio.shape[0], sample_rate=RATE)
    pieces = [remover.process(audio[:, start: start + block]) for start in range(0, audio.shape[1], block)]
    return np.concatenate([*pieces, remover.finish()], axis=1)


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_hum_that_holds_is_removed_and_the_music_kept(mains_hz):
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(0))
    hum = _hum(samples, mains_hz)
    out = _run(np.stack([music + hum, 0.5 * music + hum]).astype(np.float32), block=RATE)
    for channel, clean in zip(out, (music, 0.5 * music)):
        residual_db = 10 * np.log10(np.mean((channel - clean) ** 2) / np.mean(hum**2))
        assert residual_db < -20, residual_db


def test_a_note_on_a_mains_harmonic_for_a_few_seconds_is_not_hum():
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(1))
    t = np.arange(samples) / RATE
    # Three partials exactly on 100, 150 and 200 Hz, for 2.5 s: a family of steady lines, but one that ends.
    held = (t >= 4) & (t < 6.5)
    music[held] += sum(0.02 * np.sin(2 * np.pi * f * t[held]) for f in (100.0, 150.0, 200.0))
    audio = music[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


@pytest.mark.parametrize("mains_hz", [50.0, 60.0, None])
def test_the_stage_reports_the_mains_frequency_it_took_out(mains_hz):
    samples = 6 * RATE
    audio = _music(samples, np.random.default_rng(4)) + (_hum(samples, mains_hz) if mains_hz else 0)
    remover = HumRemover(channels=1, sample_rate=RATE)
    remover.process(audio[None].astype(np.float32))
    remover.finish()
    assert remover.found_hz == mains_hz


@pytest.mark.parametrize("block", [1000, 44100, 12 * 44100])
def test_output_has_the_input_length_and_does_not_depend_on_the_block_size(block):
    samples = 12 * RATE + 123
    audio = (_music(samples, np.random.default_rng(2)) + _hum(samples, 50.0))[None].astype(np.float32)
    out = _run(audio, block=block)
    assert out.shape == audio.shape
    np.testing.assert_allclose(out, _run(audio, block=7 * RATE), atol=1e-7, rtol=0)


def test_audio_too_short_to_tell_passes_unchanged():
    audio = (_music(2 * RATE, np.random.default_rng(3)) + _hum(2 * RATE, 50.0))[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


@pytest.mark.parametrize("mains_hz, sample_rate", [(50.0, 44100), (60.0, 44100), (60.0, 48000)])
def test_phasor_tables_are_the_harmonics_exp_minus_i_omega_t(mains_hz, sample_rate):
    # The tables are built in float32 for speed; they must still be exp(-iωt) to float32 precision over a
    # whole segment, or the fitted hum drifts out of phase towards the segment's end.
    cosine, sine = _phasors(mains_hz, 1 << 16, sample_rate)
    frequencies = mains_hz * np.arange(1, cosine.shape[0] + 1)
    exact = np.exp(-2j * np.pi * np.outer(frequencies, np.arange(1 << 16) / sample_rate))
    assert cosine.dtype == sine.dtype == np.float32
    assert np.abs(cosine - exact.real).max() < 1e-6
    assert np.abs(sine - exact.imag).max() < 1e-6


def test_without_hum_the_stage_skips_the_steadiness_test_and_returns_its_input(monkeypatch):
    from cassette_denoise import hum

    calls = []
    steady = hum._steady
    monkeypatch.setattr(hum, "_steady", lambda *args: calls.append(1) or steady(*args))
    samples = 8 * RATE
    t = np.arange(samples) / RATE
    # Notes well off every multiple of 50 and 60 Hz, and a little noise.
    notes = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (130.81, 440.0, 587.33))
    music = np.stack([notes + 1e-4 * np.random.default_rng(seed).standard_normal(samples) for seed in (1, 2)])
    music = music.astype(np.float32)
    assert np.array_equal(_run(music, block=RATE), music)
    quiet_calls = len(calls)
    _run(music + _hum(samples, 50.0).astype(np.float32), block=RATE)
    # The test runs per segment and mains frequency where some line stands out: without hum in at most
    # half of them (a noise peak now and then), with hum in every segment.
    segments = (samples - hum.SEGMENT_SAMPLES) // (hum.SEGMENT_SAMPLES // 2) + 1
    assert quiet_calls <= segments and len(calls) - quiet_calls >= segments
