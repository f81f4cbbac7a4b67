"""The clean-music corpus: the train/test split, FluidSynth rendering, decoding, manifest and CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cassette_denoise import corpus
from cassette_denoise.audio import MODEL_SAMPLE_RATE, probe, read_audio, write_audio
from cassette_denoise.cli import main
from cassette_denoise.corpus import (
    CHORALE_SOURCE,
    PEAK_DBFS_RANGE,
    SOUNDTRACKS,
    TEST_SOURCES,
    TRAIN_SOURCES,
    CorpusEntry,
    CorpusError,
    Soundtrack,
    build_corpus,
    load_manifest,
    save_manifest,
    split_for,
)

music21 = pytest.importorskip("music21")

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not corpus.DEFAULT_SOUNDFONT.is_file(),
    reason="needs the fluidsynth program and the FluidR3 sound font (apt install fluidsynth fluid-soundfont-gm)",
)


def peak_dbfs(audio: np.ndarray) -> float:
    return 20 * np.log10(np.abs(audio).max())


def tone_file(path: Path, *, seconds: float, sample_rate: int, silence_s: float = 0.0) -> np.ndarray:
    """A mono tone with digital silence either side; returns what was written, ``(1, samples)``."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    pad = np.zeros(int(silence_s * sample_rate))
    audio = np.concatenate([pad, tone, pad])[None].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, audio, sample_rate)
    return audio


# --- the split ------------------------------------------------------------------------------------


def test_bach_chorales_and_soundtracks_never_go_to_test():
    chorales = corpus.chorale_pieces()
    assert len(chorales) > 300
    assert {split_for(p.source, p.name) for p in chorales} == {"train", "validation"}
    for soundtrack in SOUNDTRACKS:
        for name in ("track1", "a-new-journey", "aztec", "anything"):
            assert split_for(soundtrack.source, name) in ("train", "validation")
    assert TRAIN_SOURCES.isdisjoint(TEST_SOURCES)


def test_other_composers_only_go_to_test():
    chorale_origins = {p.origin for p in corpus.chorale_pieces()}
    by_composer = corpus.test_pieces()
    assert len(by_composer) >= 10 and all(by_composer.values())
    for composer, pieces in by_composer.items():
        assert composer not in ("bach", "cpebach")
        for piece in pieces:
            assert split_for(piece.source, piece.name) == "test"
            assert piece.source in TEST_SOURCES
            assert not piece.origin.startswith(("bach/", "cpebach/"))
            assert piece.origin.rsplit(".", 1)[0] not in chorale_origins


def test_unknown_source_has_no_split():
    with pytest.raises(ValueError, match="neither"):
        split_for("music21-bach", "bwv1")


def test_validation_is_about_five_percent_and_fixed_by_name():
    names = [f"piece{i}" for i in range(4000)]
    held = [corpus.is_validation("user", name) for name in names]
    assert 0.04 < np.mean(held) < 0.06
    assert held == [corpus.is_validation("user", name) for name in names]


def test_soundtracks_are_deduplicated_by_content_and_missing_packages_named(tmp_path):
    root = tmp_path / "game"
    tone_file(root / "en" / "track1.wav", seconds=1, sample_rate=8000)
    (root / "de").mkdir()
    shutil.copy(root / "en" / "track1.wav", root / "de" / "track1.wav")  # the same music, another language
    tone_file(root / "en" / "track2.wav", seconds=2, sample_rate=8000)
    soundtracks = [Soundtrack("drascula", "drascula-music", root),
                   Soundtrack("pushover", "pushover-data", tmp_path / "absent")]
    pieces, skipped = corpus.soundtrack_pieces(soundtracks)
    assert sorted(p.name for p in pieces) == ["track1", "track2"]
    assert [s.source for s in skipped] == ["pushover"] and "pushover-data" in skipped[0].reason


# --- rendering ------------------------------------------------------------------------------------


@needs_fluidsynth
def test_chorale_excerpt_renders_to_stereo_flac_at_the_drawn_peak(tmp_path):
    score = music21.corpus.parse("bach/bwv269").measures(1, 3)
    audio, params = corpus.render_score(score, rng=np.random.default_rng(3))
    path = tmp_path / "bwv269.flac"
    write_audio(path, audio, MODEL_SAMPLE_RATE, subtype="PCM_16")

    info = probe(path)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (44_100, 2, "FLAC", "PCM_16")
    assert 3.0 < info.duration_s < 30.0
    decoded, _ = read_audio(path)
    assert PEAK_DBFS_RANGE[0] <= params.peak_dbfs <= PEAK_DBFS_RANGE[1]
    assert peak_dbfs(decoded) == pytest.approx(params.peak_dbfs, abs=0.05)
    assert 20 * np.log10(np.sqrt(np.mean(decoded**2))) > params.peak_dbfs - 30  # music, not a click
    floor = np.abs(audio).max() * 10 ** (-corpus.SILENCE_BELOW_PEAK_DB / 20)
    assert np.abs(audio[:, 0]).max() > floor and np.abs(audio[:, -1]).max() > floor  # silence trimmed
    assert len(params.programs) == len(params.pans) == 4  # one instrument and pan per part
    _, again = corpus.render_score(score, rng=np.random.default_rng(3))
    assert again == params


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
    paired = corpus._pair_notes(timed)
    sounding: dict[int, int] = {}
    for _, event in paired:
        delta = -1 if corpus._is_note_off(event) else 1
        sounding[event.pitch] = sounding.get(event.pitch, 0) + delta
        assert sounding[event.pitch] >= 0
    assert set(sounding.values()) == {0}
    assert sum(not corpus._is_note_off(e) for _, e in paired) == 3  # the grace note is gone


# --- building, resuming and reading ---------------------------------------------------------------


def test_music21_pieces_are_taken_in_turn_and_a_failure_is_replaced_from_its_group(tmp_path, monkeypatch):
    def fake_render(builder, piece, split):
        if piece.name.endswith("bad"):
            raise ValueError("badly formed repeats")
        return CorpusEntry(tmp_path / f"{piece.name}.flac", split, piece.source, 60.0, {"piece": piece.key})

    monkeypatch.setattr(corpus._Builder, "_render", fake_render)
    groups = [[corpus.Piece("music21-mozart", name, name) for name in ("m1", "m2")],
              [corpus.Piece("music21-haydn", name, name) for name in ("h1-bad", "h2", "h3")],
              [corpus.Piece("music21-verdi", "v1", "v1")]]
    builder = corpus._Builder(tmp_path, seed=0, soundfont=corpus.DEFAULT_SOUNDFONT, max_file_s=150.0,
                              progress=lambda line: None)
    builder.add_music21(groups, 5)
    assert [e.params["piece"] for e in builder.entries.values()] == [
        "music21-mozart/m1", "music21-haydn/h2", "music21-verdi/v1", "music21-mozart/m2", "music21-haydn/h3"]
    assert [s.name for s in builder.skipped] == ["h1-bad"]


def test_chorales_repeated_in_the_catalogue_are_rendered_once():
    pieces = corpus.chorale_pieces()
    distinct = corpus._distinct(pieces)
    assert len(distinct) == len({p.origin for p in pieces}) < len(pieces)


def test_user_files_are_decoded_trimmed_split_and_resumed(tmp_path):
    user = tmp_path / "mine"
    tone_file(user / "album" / "long song.wav", seconds=50, sample_rate=22_050, silence_s=1.0)
    tone_file(user / "short.wav", seconds=8, sample_rate=48_000)
    out = tmp_path / "corpus"
    lines: list[str] = []

    built = build_corpus(out, split="train", max_music21=0, seed=1, user_dir=user, progress=lines.append,
                         max_file_s=20.0, soundtracks=())
    assert built.files_written == 4 and len(lines) == 2 and not built.skipped
    long_parts = [e for e in built.entries if e.params["piece"] == "user/album_long-song"]
    assert len(long_parts) == 3 and len({e.split for e in long_parts}) == 1  # one track, one split
    assert sum(e.duration_s for e in long_parts) == pytest.approx(50.0, abs=0.01)  # silence trimmed
    for entry in built.entries:
        assert entry.path.parent == out / "train" / "user" and entry.split in ("train", "validation")
        info = probe(entry.path)
        assert (info.sample_rate, info.channels, info.subtype) == (44_100, 2, "PCM_16")
        assert entry.duration_s <= 20.0 and info.duration_s == pytest.approx(entry.duration_s, abs=1e-3)
        assert peak_dbfs(read_audio(entry.path)[0]) == pytest.approx(entry.params["peak_dbfs"], abs=0.05)

    stamps = {e.path: e.path.stat().st_mtime_ns for e in built.entries}
    again = build_corpus(out, split="train", max_music21=0, seed=1, user_dir=user, max_file_s=20.0, soundtracks=())
    assert again.files_written == 0
    assert {e.path: e.path.stat().st_mtime_ns for e in again.entries} == stamps
    assert load_manifest(out) == list(again.entries)


@needs_fluidsynth
def test_one_chorale_build_lands_in_train_with_its_render_params(tmp_path):
    built = build_corpus(tmp_path, split="train", max_music21=1, seed=0, soundtracks=())
    (entry,) = built.entries
    assert entry.source == CHORALE_SOURCE and entry.split in ("train", "validation")
    assert entry.path.parent == tmp_path / "train" / CHORALE_SOURCE
    for key in ("programs", "pans_cc10", "tempo_scale", "transpose_semitones", "peak_dbfs", "origin"):
        assert key in entry.params
    assert load_manifest(tmp_path)[0].params == entry.params


def test_two_builds_into_one_folder_are_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / corpus.LOCK_NAME, "a") as other_build:
        fcntl.flock(other_build, fcntl.LOCK_EX)
        with pytest.raises(CorpusError, match="another corpus build"):
            build_corpus(tmp_path, split="train", max_music21=0, seed=0, soundtracks=())


def test_manifest_round_trip(tmp_path):
    entries = [
        CorpusEntry(tmp_path / "train" / "user" / "a.flac", "train", "user", 12.5, {"peak_dbfs": -3.0}),
        CorpusEntry(tmp_path / "test" / "music21-mozart" / "k1.flac", "test", "music21-mozart", 90.25,
                    {"programs": [1, 40], "tempo_scale": 0.9}),
    ]
    save_manifest(tmp_path, entries)
    loaded = load_manifest(tmp_path)
    assert sorted(loaded, key=str) == sorted(entries, key=str)
    assert {str(e.path): e.params for e in loaded} == {str(e.path): e.params for e in entries}
    assert not list(tmp_path.glob(".*partial"))


def test_missing_or_broken_manifest_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="no corpus manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "entries": [{"path": "x.flac"}]}')
    with pytest.raises(CorpusError, match="malformed"):
        load_manifest(tmp_path)


# --- command line ---------------------------------------------------------------------------------


def test_cli_builds_from_a_user_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus, "SOUNDTRACKS", ())  # keep the test offline from /usr/share and fast
    tone_file(tmp_path / "mine" / "song.flac", seconds=6, sample_rate=44_100)
    code = main(["corpus", "--out", str(tmp_path / "c"), "--split", "train", "--max-music21", "0",
                 "--user", str(tmp_path / "mine")])
    assert code == 0
    assert "user" in capsys.readouterr().out
    assert len(load_manifest(tmp_path / "c")) == 1


def test_cli_names_the_packages_when_fluidsynth_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    code = main(["corpus", "--out", str(tmp_path), "--split", "test", "--max-test-music21", "1"])
    assert code == 2
    assert "apt install fluidsynth fluid-soundfont-gm" in capsys.readouterr().err
