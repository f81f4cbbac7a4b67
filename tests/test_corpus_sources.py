"""The corpus's sources and split: no piece, composer or soundtrack on both sides."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cassette_denoise.corpus import sources
from cassette_denoise.corpus.sources import SOUNDTRACKS, TEST_SOURCES, TRAIN_SOURCES, Soundtrack, split_for

from corpus_fixtures import needs_music21, tone_file


@needs_music21
def test_bach_chorales_and_soundtracks_never_go_to_test():
    chorales = sources.chorale_pieces()
    assert len(chorales) > 300
    assert {split_for(p.source, p.name) for p in chorales} == {"train", "validation"}
    for soundtrack in SOUNDTRACKS:
        for name in ("track1", "a-new-journey", "aztec", "anything"):
            assert split_for(soundtrack.source, name) in ("train", "validation")
    assert TRAIN_SOURCES.isdisjoint(TEST_SOURCES)


@needs_music21
def test_other_composers_only_go_to_test():
    chorale_origins = {p.origin for p in sources.chorale_pieces()}
    by_composer = sources.test_pieces()
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
    held = [sources.is_validation("user", name) for name in names]
    assert 0.04 < np.mean(held) < 0.06
    assert held == [sources.is_validation("user", name) for name in names]


def test_soundtracks_are_deduplicated_by_content_and_missing_packages_named(tmp_path):
    root = tmp_path / "game"
    tone_file(root / "en" / "track1.wav", seconds=1, sample_rate=8000)
    (root / "de").mkdir()
    shutil.copy(root / "en" / "track1.wav", root / "de" / "track1.wav")  # the same music, another language
    tone_file(root / "en" / "track2.wav", seconds=2, sample_rate=8000)
    soundtracks = [Soundtrack("drascula", "drascula-music", root),
                   Soundtrack("pushover", "pushover-data", tmp_path / "absent")]
    pieces, skipped = sources.soundtrack_pieces(soundtracks)
    assert sorted(p.name for p in pieces) == ["track1", "track2"]
    assert [s.source for s in skipped] == ["pushover"] and "pushover-data" in skipped[0].reason


@needs_music21
def test_chorales_repeated_in_the_catalogue_are_rendered_once():
    pieces = sources.chorale_pieces()
    distinct = sources.distinct(pieces)
    assert len(distinct) == len({p.origin for p in pieces}) < len(pieces)
