"""Building a corpus: pieces in turn, user files decoded and resumed, one build per folder, the manifest, the CLI."""

from __future__ import annotations


import pytest

from cassette_denoise.corpus import build, render, sources
from cassette_denoise.audio import probe, read_audio
from cassette_denoise.cli import main
from cassette_denoise.corpus import CorpusEntry, CorpusError, build_corpus, load_manifest, save_manifest
from cassette_denoise.corpus.sources import CHORALE_SOURCE

from corpus_fixtures import needs_music21, needs_fluidsynth, peak_dbfs, tone_file


def test_music21_pieces_are_taken_in_turn_and_a_failure_is_replaced_from_its_group(tmp_path, monkeypatch):
    def fake_render(builder, piece, split):
        if piece.name.endswith("bad"):
            raise ValueError("badly formed repeats")
        return CorpusEntry(tmp_path / f"{piece.name}.flac", split, piece.source, 60.0, {"piece": piece.key})

    monkeypatch.setattr(build._Builder, "_render", fake_render)
    groups = [[sources.Piece("music21-mozart", name, name) for name in ("m1", "m2")],
              [sources.Piece("music21-haydn", name, name) for name in ("h1-bad", "h2", "h3")],
              [sources.Piece("music21-verdi", "v1", "v1")]]
    builder = build._Builder(tmp_path, seed=0, soundfont=render.DEFAULT_SOUNDFONT, max_file_s=150.0,
                             progress=lambda line: None)
    builder.add_music21(groups, 5)
    assert [e.params["piece"] for e in builder.entries.values()] == [
        "music21-mozart/m1", "music21-haydn/h2", "music21-verdi/v1", "music21-mozart/m2", "music21-haydn/h3"]
    assert [s.name for s in builder.skipped] == ["h1-bad"]


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


@needs_music21
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
    with open(tmp_path / build.LOCK_NAME, "a") as other_build:
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


def test_cli_builds_from_a_user_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "SOUNDTRACKS", ())  # keep the test offline from /usr/share and fast
    tone_file(tmp_path / "mine" / "song.flac", seconds=6, sample_rate=44_100)
    code = main(["corpus", "--out", str(tmp_path / "c"), "--split", "train", "--max-music21", "0",
                 "--user", str(tmp_path / "mine")])
    assert code == 0
    assert "user" in capsys.readouterr().out
    assert len(load_manifest(tmp_path / "c")) == 1


@needs_music21
def test_cli_names_the_packages_when_fluidsynth_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    code = main(["corpus", "--out", str(tmp_path), "--split", "test", "--max-test-music21", "1"])
    assert code == 2
    assert "apt install fluidsynth fluid-soundfont-gm" in capsys.readouterr().err
