"""Blank-tape recordings: stationary tape noise of every kind is accepted, music and silence are refused."""

import numpy as np
import pytest
import soundfile as sf

from cassette_denoise.audio import AudioError
from cassette_denoise.blank_tape import MAX_SPREAD_DB, NoiseError, level_spread_db, read_blank_tape, read_blank_tapes
from cassette_denoise.simulate import apply_cassette, sample_cassette
from cassette_denoise.simulate.families import family_noise, sample_family

RATE = 44100


def family(name: str, seconds: float, *, seed: int = 0) -> np.ndarray:
    noise = family_noise(np.zeros((2, int(seconds * RATE)), np.float32), RATE,
                         sample_family(np.random.default_rng(seed), name))
    return (noise * (1e-3 / np.sqrt(np.mean(noise**2)))).astype(np.float32)  # -60 dBFS


def notes(seconds: float, *, seed: int = 0) -> np.ndarray:
    """Music-like audio ``(2, samples)``: a new chord of harmonic tones every 0.4 s, each decaying."""
    rng = np.random.default_rng(seed)
    samples, note = int(seconds * RATE), int(0.4 * RATE)
    t = np.arange(note) / RATE
    out = np.zeros(samples)
    for start in range(0, samples - note + 1, note):
        for midi in rng.integers(48, 84, size=3):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6) if f0 * k < RATE / 2)
            out[start: start + note] += 0.05 * tone * np.exp(-t / 0.15)
    return np.stack([out, out]).astype(np.float32)


@pytest.mark.parametrize("name", ["white", "pink", "brown", "falling-tape", "hum", "whine", "rumble", "broad"])
def test_stationary_tape_noise_of_every_family_stays_well_under_the_limit(name):
    assert level_spread_db(family(name, 12.0)) < MAX_SPREAD_DB / 1.5


def test_hiss_with_mains_hum_is_accepted():
    t = np.arange(12 * RATE) / RATE
    hum = sum(2e-3 / k * np.sin(2 * np.pi * 50 * k * t) for k in range(1, 6))
    assert level_spread_db(family("white", 12.0) + hum.astype(np.float32)) < MAX_SPREAD_DB / 1.5


@pytest.mark.parametrize("preset", ["random", "worn-tape"])
def test_a_simulated_deck_with_clicks_and_dropouts_playing_silence_is_accepted(preset):
    for seed in range(3):  # seed 1 of "random" draws a click every 0.4 s
        tape = sample_cassette(np.random.default_rng(seed), preset)
        noisy = apply_cassette(np.zeros((1, 12 * RATE), np.float32), RATE, tape).noisy
        assert level_spread_db(noisy) < MAX_SPREAD_DB


@pytest.mark.parametrize("snr_db", [10.0, 20.0, 40.0])
def test_music_under_tape_noise_is_refused(snr_db):
    music, noise = notes(12.0), family("falling-tape", 12.0)
    gain = np.sqrt(np.mean(music**2) / np.mean(noise**2) * 10 ** (-snr_db / 10))
    assert level_spread_db(music + noise * gain) > 1.5 * MAX_SPREAD_DB


def test_a_lead_in_whose_last_seventh_holds_music_is_refused():
    noise = family("pink", 21.0)
    noise[:, -3 * RATE:] += notes(3.0)
    assert level_spread_db(noise) > MAX_SPREAD_DB


def test_a_recording_is_read_at_the_model_rate_without_its_digital_silence_and_dc(tmp_path):
    noise = np.random.default_rng(0).standard_normal((2, 10 * 48000)) * 1e-3 + 0.01
    padded = np.concatenate([np.zeros((2, 48000)), noise, np.zeros((2, 24000))], axis=1)
    sf.write(tmp_path / "lead-in.wav", padded.T, 48000, subtype="FLOAT")
    tape = read_blank_tape(tmp_path / "lead-in.wav")
    assert tape.source_sample_rate == 48000 and tape.audio.shape[0] == 2
    assert 9.8 < tape.seconds < 10.2
    assert np.abs(tape.audio.mean(axis=1)).max() < 1e-4
    trained, held_out = tape.split(held_out_share=0.25)
    assert held_out.shape[1] == pytest.approx(tape.audio.shape[1] / 4, abs=1)
    assert np.array_equal(np.concatenate([trained, held_out], axis=1), tape.audio)


@pytest.mark.parametrize("level,shown", [(0.0, "-inf dBFS"), (1e-6, "-120.0 dBFS")])
def test_silent_recordings_are_refused_with_their_level(tmp_path, level, shown):
    sf.write(tmp_path / "blank.wav", (np.random.default_rng(0).standard_normal(30 * RATE) * level), RATE,
             subtype="FLOAT")
    with pytest.raises(NoiseError, match=rf"blank.wav: silent \(RMS {shown}"):
        read_blank_tape(tmp_path / "blank.wav")


def test_music_files_are_refused_with_the_spread(tmp_path):
    sf.write(tmp_path / "song.flac", notes(10.0).T, RATE)
    with pytest.raises(NoiseError, match=r"song.flac: holds music .*moves \d+\.\d dB"):
        read_blank_tape(tmp_path / "song.flac")


def test_too_little_noise_in_all_is_refused_with_each_length_and_the_total(tmp_path):
    for name, seconds in (("a.wav", 8.0), ("b.wav", 6.0)):
        sf.write(tmp_path / name, family("pink", seconds).T, RATE, subtype="FLOAT")
    with pytest.raises(NoiseError, match=r"a.wav 8.0 s, .*b.wav 6.0 s: 14.0 s of blank-tape noise in all; at least 20 s"):
        read_blank_tapes([tmp_path / "a.wav", tmp_path / "b.wav"])


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "blank.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="blank.wav: not a readable audio file"):
        read_blank_tapes([tmp_path / "blank.wav"])
