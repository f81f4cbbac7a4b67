"""The hum stage: takes out a family of lines with a fundamental anywhere in 45–65 Hz that holds, following its
drift, and leaves music (even a note on a harmonic, or a bass line near 55 Hz) alone."""

import numpy as np
import pytest

from cassette_denoise.hum import HumRemover, _phasors
from cassette_denoise.metrics import si_sdr
from cassette_denoise.simulate.families import OffSpeedHum, TonalLines

RATE = 44100


def _hum(samples: int, mains_hz: float) -> np.ndarray:
    t = np.arange(samples) / RATE
    return sum(level * np.sin(2 * np.pi * mains_hz * order * t + phase)
               for order, level, phase in [(1, 1e-3, 0.3), (2, 3e-4, 1.0), (3, 1.5e-3, 2.0), (5, 8e-4, 0.5)])


def _off_speed_hum(samples: int, fundamental_hz: float, *, drift_percent: float = 0.0, drift_hz: float = 0.2,
                   seed: int = 0) -> np.ndarray:
    """Five harmonics of ``fundamental_hz`` at -50 dBFS together, even ones 3-10 dB under the fundamental."""
    params = OffSpeedHum.sample_params(np.random.default_rng(seed), fundamental_hz=(fundamental_hz,) * 2,
                                       level_dbfs=(-50.0, -50.0), even_harmonics_db=(-10.0, -3.0),
                                       drift_percent=(drift_percent,) * 2, drift_hz=(drift_hz,) * 2)
    return TonalLines.render(params, channels=1, samples=samples, sample_rate=RATE)[0].astype(np.float64)


def _music(samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(samples) / RATE
    # Notes off the mains grid, with a swelling level, plus a little broadband noise.
    notes = sum(0.05 * np.sin(2 * np.pi * f * t) for f in _NOTES_HZ)
    return notes * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)) + 1e-4 * rng.standard_normal(samples)


_NOTES_HZ = (110.0 * 2 ** (3 / 12), 440.0, 659.26)


def _bass_line(samples: int, notes_hz: list[float], *, note_s: float) -> np.ndarray:
    """Sustained notes with six harmonic partials at a steady level, each held ``note_s``, in turn."""
    t = np.arange(samples) / RATE
    note = np.minimum((t // note_s).astype(int), len(notes_hz) - 1)
    fundamental = np.asarray(notes_hz)[note]
    start = note * note_s
    return sum(0.02 / order * np.sin(2 * np.pi * order * fundamental * (t - start)) for order in range(1, 7))


def _run(audio: np.ndarray, *, block: int) -> np.ndarray:
    remover = HumRemover(channels=audio.shape[0], sample_rate=RATE)
    pieces = [remover.process(audio[:, start: start + block]) for start in range(0, audio.shape[1], block)]
    return np.concatenate([*pieces, remover.finish()], axis=1)


def _line_levels(audio: np.ndarray, frequencies_hz: np.ndarray) -> np.ndarray:
    """Magnitude of ``audio`` ``(samples,)`` at each of ``frequencies_hz``, over the whole signal."""
    t = np.arange(audio.shape[-1]) / RATE
    return np.abs(np.exp(-2j * np.pi * np.outer(frequencies_hz, t)) @ audio)


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_hum_that_holds_is_removed_and_the_music_kept(mains_hz):
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(0))
    hum = _hum(samples, mains_hz)
    out = _run(np.stack([music + hum, 0.5 * music + hum]).astype(np.float32), block=RATE)
    for channel, clean in zip(out, (music, 0.5 * music)):
        residual_db = 10 * np.log10(np.mean((channel - clean) ** 2) / np.mean(hum**2))
        assert residual_db < -40, residual_db


@pytest.mark.parametrize("fundamental_hz", [46.0, 48.5, 63.0])
def test_off_speed_hum_is_taken_down_at_its_lines_and_the_music_kept(fundamental_hz):
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(5))
    hum = _off_speed_hum(samples, fundamental_hz)
    audio = (music + hum)[None].astype(np.float32)
    out = _run(audio, block=RATE)[0]
    lines = fundamental_hz * np.arange(1, 6)
    # A line within a few hertz of a note 30 dB louder cannot be told from it in half a segment (at 63 Hz:
    # 126 Hz, beside the music's 130.8 Hz); it stays.
    lines = lines[np.abs(lines[:, None] - np.array(_NOTES_HZ)).min(axis=-1) > 6]
    reduction_db = 20 * np.log10(_line_levels(out - music, lines) / _line_levels(hum, lines))
    assert np.all(reduction_db < -20), reduction_db
    # Whatever the stage took out is hum: the music is at least as close to the output as to the input.
    assert si_sdr(music, out) >= si_sdr(music, audio[0]) + 15


def test_drifting_hum_is_followed_and_taken_down():
    # 0.5 % at 0.2 Hz: the 5th harmonic sweeps 2.4 Hz within one 1.5 s segment.
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(6))
    hum = _off_speed_hum(samples, 48.5, drift_percent=0.5, drift_hz=0.2)
    out = _run((music + hum)[None].astype(np.float32), block=RATE)[0]
    residual_db = 10 * np.log10(np.mean((out - music) ** 2) / np.mean(hum**2))
    assert residual_db < -25, residual_db


def test_a_note_on_a_mains_harmonic_for_a_few_seconds_is_not_hum():
    samples = 12 * RATE
    music = _music(samples, np.random.default_rng(1))
    t = np.arange(samples) / RATE
    # Three partials exactly on 100, 150 and 200 Hz, for 2.5 s: a family of steady lines, but one that ends.
    held = (t >= 4) & (t < 6.5)
    music[held] += sum(0.02 * np.sin(2 * np.pi * f * t[held]) for f in (100.0, 150.0, 200.0))
    audio = music[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


@pytest.mark.parametrize("note_s", [2.0, 3.0])
def test_a_sustained_bass_line_near_55_hz_is_not_hum(note_s):
    # Each note is a family of steady lines with a fundamental in 45-65 Hz, held for seconds, from the file's
    # first sample; but the line moves by semitones, which hum does not.
    samples = 12 * RATE
    bass = _bass_line(samples, [55.0, 49.0, 58.27, 55.0, 61.74, 51.91], note_s=note_s)
    audio = (_music(samples, np.random.default_rng(7)) + bass)[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


def test_bass_chords_held_for_seconds_are_not_hum():
    # Two-note chords in 45-65 Hz, each held 7 s with steady partials, as game and organ music holds them.
    samples = 21 * RATE
    music = _music(samples, np.random.default_rng(9))
    for notes_hz in ([49.0, 51.91, 61.74], [54.6, 46.25, 58.27]):
        music += _bass_line(samples, notes_hz, note_s=7.0)
    audio = music[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


def test_a_steady_note_an_octave_above_the_hum_range_is_not_hum():
    # 98.4 Hz with its harmonics, steady for 15 s: the even harmonics of 49.2 Hz, but no odd one.
    samples = 15 * RATE
    note = _bass_line(samples, [98.4], note_s=15.0)
    audio = (_music(samples, np.random.default_rng(11)) + note)[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


@pytest.mark.parametrize("hum_hz, found_hz", [(50.0, 50.0), (60.0, 60.0), (48.5, 48.5), (63.17, 63.2), (None, None)])
def test_the_stage_reports_the_fundamental_it_took_out(hum_hz, found_hz):
    samples = 8 * RATE
    audio = _music(samples, np.random.default_rng(4)) + (_off_speed_hum(samples, hum_hz) if hum_hz else 0)
    remover = HumRemover(channels=1, sample_rate=RATE)
    remover.process(audio[None].astype(np.float32))
    remover.finish()
    assert remover.found_hz == found_hz


@pytest.mark.parametrize("block", [1000, 4321, 44100 + 7])
def test_output_has_the_input_length_and_does_not_depend_on_the_block_size(block):
    samples = 12 * RATE + 123
    hum = _off_speed_hum(samples, 48.5, drift_percent=0.5, drift_hz=0.2)
    audio = (_music(samples, np.random.default_rng(2)) + hum)[None].astype(np.float32)
    out = _run(audio, block=block)
    assert out.shape == audio.shape
    np.testing.assert_allclose(out, _run(audio, block=samples), atol=1e-7, rtol=0)


def test_memory_stays_flat_however_long_the_stream():
    remover = HumRemover(channels=1, sample_rate=RATE)
    rng = np.random.default_rng(12)
    held = []
    for second in range(60):
        t = np.arange(second * RATE, (second + 1) * RATE) / RATE
        block = sum(1e-3 * np.sin(2 * np.pi * hz * t) for hz in (48.5, 145.5, 242.5))
        remover.process((block + 1e-4 * rng.standard_normal(RATE))[None])
        held.append((remover._buffer.held_samples, len(remover._segments)))
    # After the first window's worth (~16 s) the buffers stop growing.
    samples_held, segments_held = np.array(held).T
    assert samples_held[30:].max() <= samples_held[:30].max()
    assert segments_held[30:].max() <= segments_held[:30].max()
    assert remover.found_hz == 48.5


def test_audio_too_short_to_tell_passes_unchanged():
    audio = (_music(2 * RATE, np.random.default_rng(3)) + _hum(2 * RATE, 50.0))[None].astype(np.float32)
    np.testing.assert_array_equal(_run(audio, block=RATE), audio)


def test_phasor_tables_are_the_harmonics_exp_minus_i_k_theta():
    # The tables are built in float32 for speed; they must still be exp(-ikθ) to float32 precision over a
    # whole segment, or the fitted hum drifts out of phase towards the segment's end.
    cycles = 63.17 * np.arange(1 << 16) / RATE + 1e4  # a phase far from zero, as deep into a long file
    orders = np.array([1, 2, 5, 22])
    cosine, sine = _phasors(cycles, orders)
    exact = np.exp(-2j * np.pi * np.outer(orders, cycles))
    assert cosine.dtype == sine.dtype == np.float32
    assert np.abs(cosine - exact.real).max() < 2e-5
    assert np.abs(sine - exact.imag).max() < 2e-5


def test_without_hum_the_stage_skips_the_steadiness_test_and_returns_its_input(monkeypatch):
    from cassette_denoise import hum

    calls = []
    steady = hum._steady_lines
    monkeypatch.setattr(hum, "_steady_lines", lambda *args: calls.append(1) or steady(*args))
    samples = 8 * RATE
    t = np.arange(samples) / RATE
    # Notes well off every multiple of 45-65 Hz with three partials in reach, and a little noise.
    notes = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (130.81, 440.0, 587.33))
    music = np.stack([notes + 1e-4 * np.random.default_rng(seed).standard_normal(samples) for seed in (1, 2)])
    music = music.astype(np.float32)
    assert np.array_equal(_run(music, block=RATE), music)
    quiet_calls = len(calls)
    _run(music + _hum(samples, 50.0).astype(np.float32), block=RATE)
    # The test runs per segment where the search found a family: without hum in at most half of them (a
    # chance alignment now and then), with hum in every segment.
    segments = (samples - hum.SEGMENT_SAMPLES) // (hum.SEGMENT_SAMPLES // 2) + 1
    assert quiet_calls <= segments // 2 and len(calls) - quiet_calls >= segments


@pytest.mark.parametrize("rate, decimation", [(44100, 16), (48000, 16), (16000, 4), (4000, 1)])
def test_the_analysis_runs_decimated_and_finds_the_same_hum_at_any_rate(rate, decimation):
    # The search looks at nothing above 1 kHz: at 44.1 kHz it runs on a sixteenth of the samples. At every
    # rate the hum is still found and taken out to the same depth.
    samples = 12 * rate
    t = np.arange(samples) / rate
    noise = 1e-4 * np.random.default_rng(4).standard_normal(samples)
    music = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (130.81, 440.0)) + noise
    hum = sum(level * np.sin(2 * np.pi * 50.0 * order * t + order)
              for order, level in [(1, 1e-3), (3, 1.5e-3), (5, 8e-4)])
    remover = HumRemover(channels=1, sample_rate=rate)
    assert remover.decimation == decimation and remover.segment % (2 * decimation) == 0
    audio = (music + hum)[None].astype(np.float32)
    out = np.concatenate([*(remover.process(audio[:, start: start + rate]) for start in range(0, samples, rate)),
                          remover.finish()], axis=1)[0]
    assert out.shape == (samples,)
    assert remover.found_hz == 50.0
    residual_db = 10 * np.log10(np.mean((out - music) ** 2) / np.mean(hum**2))
    assert residual_db < -35, residual_db
