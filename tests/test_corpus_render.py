"""Rendering scores through FluidSynth: stereo, at the drawn peak, every note ended."""

from __future__ import annotations


import numpy as np
import pytest

from cassette_denoise.corpus import levels, render
from cassette_denoise.audio import MODEL_SAMPLE_RATE, probe, read_audio, write_audio
from cassette_denoise.corpus.levels import PEAK_DBFS_RANGE

from corpus_fixtures import music21, needs_music21, needs_fluidsynth, peak_dbfs


@needs_music21
@needs_fluidsynth
def test_chorale_excerpt_renders_to_stereo_flac_at_the_drawn_peak(tmp_path):
    score = music21.corpus.parse("bach/bwv269").measures(1, 3)
    audio, params = render.render_score(score, rng=np.random.default_rng(3))
    path = tmp_path / "bwv269.flac"
    write_audio(path, audio, MODEL_SAMPLE_RATE, subtype="PCM_16")

    info = probe(path)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (44_100, 2, "FLAC", "PCM_16")
    assert 3.0 < info.duration_s < 30.0
    decoded, _ = read_audio(path)
    assert PEAK_DBFS_RANGE[0] <= params.peak_dbfs <= PEAK_DBFS_RANGE[1]
    assert peak_dbfs(decoded) == pytest.approx(params.peak_dbfs, abs=0.05)
    assert 20 * np.log10(np.sqrt(np.mean(decoded**2))) > params.peak_dbfs - 30  # music, not a click
    floor = np.abs(audio).max() * 10 ** (-levels.SILENCE_BELOW_PEAK_DB / 20)
    assert np.abs(audio[:, 0]).max() > floor and np.abs(audio[:, -1]).max() > floor  # silence trimmed
    assert len(params.programs) == len(params.pans) == 4  # one instrument and pan per part
    _, again = render.render_score(score, rng=np.random.default_rng(3))
    assert again == params


@needs_music21
def test_zero_length_and_unended_notes_are_paired():
    midi = music21.midi
    on = midi.ChannelVoiceMessages.NOTE_ON

    def note(kind, pitch, velocity=64):
        event = midi.MidiEvent(type=kind, channel=1)
        event.pitch, event.velocity = pitch, velocity
        return event

    timed = [(0, note(on, 60)), (10, note(midi.ChannelVoiceMessages.NOTE_OFF, 60)),
             (10, note(midi.ChannelVoiceMessages.NOTE_OFF, 60)), (10, note(on, 60)),  # a grace note: off first
             (10, note(on, 62)), (20, note(on, 64)), (30, note(on, 64, velocity=0))]  # 62 is never ended
    paired = render._pair_notes(timed)
    sounding: dict[int, int] = {}
    for _, event in paired:
        delta = -1 if render._is_note_off(event) else 1
        sounding[event.pitch] = sounding.get(event.pitch, 0) + delta
        assert sounding[event.pitch] >= 0
    assert set(sounding.values()) == {0}
    assert sum(not render._is_note_off(e) for _, e in paired) == 3  # the grace note is gone
