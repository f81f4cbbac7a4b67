"""Where the corpus's music comes from, and which split each piece belongs to.

**The split is by source, never by chance.** Training music is J. S. Bach's chorales (rendered through
FluidSynth), the Debian soundtrack packages and the user's folder; test music is music21 works by other
composers only. No piece, composer or soundtrack can therefore sit on both sides, and a model scored on the
test split is scored on music it has never heard. Within training a fixed ~5 % of the pieces, chosen by a hash
of their names, are marked ``validation``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from cassette_denoise.audio import find_audio_files

log = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]


SplitRequest = Literal["train", "test", "all"]


VALIDATION_PERCENT = 5


CHORALE_SOURCE = "music21-bach-chorales"


USER_SOURCE = "user"


# music21 corpus folders with multi-part works (composers, and the trecento collection), none by a Bach:
# C. P. E. Bach is left out too, so that "no Bach in test" needs no footnote. Single-line folk collections
# are left out: the test music should be ensemble music like the training chorales.
TEST_COMPOSERS = (
    "mozart", "beethoven", "haydn", "schubert", "joplin", "handel", "verdi", "weber", "corelli",
    "monteverdi", "palestrina", "schoenberg", "luca", "trecento", "lusitano",
)


TEST_SOURCES = frozenset(f"music21-{composer}" for composer in TEST_COMPOSERS)


MUSIC21_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi")


class CorpusError(Exception):
    """A setup problem (no FluidSynth, sound font, music21, folder or manifest) or a failed FluidSynth render."""


@dataclass(frozen=True)
class SkippedInput:
    """A piece or file that was left out of the corpus, and why."""

    source: str
    name: str
    reason: str


@dataclass(frozen=True)
class Soundtrack:
    """Music installed by a Debian package, used for training."""

    source: str
    apt_package: str
    folder: Path


SOUNDTRACKS = (
    # drascula-music installs the same 31 tracks once per language; duplicates are removed by content.
    Soundtrack("drascula", "drascula-music", Path("/usr/share/scummvm/drascula")),
    Soundtrack("pushover", "pushover-data", Path("/usr/share/pushover/themes")),
    Soundtrack("singularity", "singularity-music", Path("/usr/share/games/singularity/music")),
)


TRAIN_SOURCES = frozenset({CHORALE_SOURCE, USER_SOURCE, *(s.source for s in SOUNDTRACKS)})


@dataclass(frozen=True)
class Piece:
    """An input to the corpus: a music21 corpus path (``bach/bwv269``) or an audio file."""

    source: str
    name: str
    origin: str

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"


# The split


def split_for(source: str, name: str) -> Split:
    """The split a piece belongs to, decided by its source alone (and, within training, its name).

    Raises:
        ValueError: for a source that is neither a training nor a test source.
    """
    if source in TRAIN_SOURCES:
        return "validation" if is_validation(source, name) else "train"
    if source in TEST_SOURCES:
        return "test"
    raise ValueError(f"source {source!r} is neither a training nor a test source")


def is_validation(source: str, name: str) -> bool:
    """Whether a training piece is held out for validation: a fixed ~5 % chosen by name hash.

    A hash rather than a random draw keeps a piece on the same side across seeds, runs and machines.
    """
    return stable_int(f"{source}/{name}") % 100 < VALIDATION_PERCENT


def chorale_pieces() -> list[Piece]:
    """Bach's four-part chorales in music21's corpus, by Riemenschneider number.

    The catalogue lists 21 chorales under two numbers each; they appear twice here.
    """
    corpus = import_music21().corpus
    names = corpus.chorales.Iterator(returnType="filename")
    return [Piece(CHORALE_SOURCE, _slug(name.split("/", 1)[-1]), name) for name in names]


def test_pieces() -> dict[str, list[Piece]]:
    """Candidate test pieces per composer: music21 scores by :data:`TEST_COMPOSERS` (sorted).

    The same work is often stored twice (``.krn`` and ``.mxl``); it is listed once, preferring MusicXML.

    Raises:
        CorpusError: if a candidate turns out to be a Bach chorale (a broken corpus or composer list).
    """
    corpus = import_music21().corpus
    chorales = {piece.origin for piece in chorale_pieces()}
    by_composer: dict[str, list[Piece]] = {}
    for composer in TEST_COMPOSERS:
        works: dict[str, str] = {}
        for path in sorted(corpus.getComposer(composer)):
            relative = _corpus_relative(Path(path))
            if Path(relative).suffix.lower() not in MUSIC21_SCORE_SUFFIXES:
                continue  # roman-numeral analyses and the like are not music
            stem = relative.rsplit(".", 1)[0]
            if stem.split("/", 1)[0] in ("bach", "cpebach") or stem in chorales:
                raise CorpusError(f"{relative}: a Bach work among the test candidates for {composer}")
            if stem not in works or _suffix_rank(relative) < _suffix_rank(works[stem]):
                works[stem] = relative
        by_composer[composer] = [
            Piece(f"music21-{composer}", _slug(stem.split("/", 1)[-1].replace("/", "_")), relative)
            for stem, relative in sorted(works.items())
        ]
    return by_composer


def soundtrack_pieces(soundtracks: Sequence[Soundtrack]) -> tuple[list[Piece], list[SkippedInput]]:
    """The audio files of the installed soundtrack packages, each distinct content once.

    Returns:
        ``(pieces, skipped)``: skipped names each package that is not installed.
    """
    pieces: list[Piece] = []
    skipped: list[SkippedInput] = []
    seen: set[str] = set()
    for soundtrack in soundtracks:
        if not soundtrack.folder.is_dir():
            reason = f"{soundtrack.folder} not found (install the Debian package {soundtrack.apt_package})"
            log.warning("%s: %s", soundtrack.source, reason)
            skipped.append(SkippedInput(soundtrack.source, "*", reason))
            continue
        files = []
        for path in find_audio_files(soundtrack.folder):
            digest = _file_sha256(path)
            if digest not in seen:
                seen.add(digest)
                files.append(path)
        pieces.extend(_file_pieces(soundtrack.source, soundtrack.folder, files, stem_only=True))
    return pieces, skipped


def user_pieces(user_dir: str | os.PathLike) -> list[Piece]:
    """Every audio file under the user's folder (recursively), named after its relative path."""
    folder = Path(user_dir)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a folder")
    return _file_pieces(USER_SOURCE, folder, find_audio_files(folder), stem_only=False)


# Helpers


def import_music21():
    try:
        import music21
        import music21.corpus.chorales  # noqa: F401  (a submodule the package does not import itself)
    except ImportError:
        raise CorpusError("music21 is not installed (pip install 'cassette-denoise[train]')") from None
    return music21


def permuted(pieces: Sequence[Piece], seed: int, purpose: str) -> list[Piece]:
    rng = np.random.default_rng([seed, stable_int(purpose)])
    return [pieces[i] for i in rng.permutation(len(pieces))]


def distinct(pieces: Iterable[Piece]) -> list[Piece]:
    """Pieces in order, each only at its first appearance."""
    seen: set[str] = set()
    distinct = []
    for piece in pieces:
        if piece.key not in seen:
            seen.add(piece.key)
            distinct.append(piece)
    return distinct


def _file_pieces(source: str, folder: Path, files: Sequence[Path], *, stem_only: bool) -> list[Piece]:
    pieces, used = [], set()
    for path in files:
        relative = path.relative_to(folder).with_suffix("")
        name = _slug(relative.name) if stem_only else "_".join(_slug(part) for part in relative.parts)
        if name in used:  # same stem in two folders or with two suffixes
            name = f"{name}-{stable_int(str(path.relative_to(folder))) % 16**6:06x}"
        used.add(name)
        pieces.append(Piece(source, name, str(path)))
    return pieces


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug or "untitled"


def stable_int(text: str) -> int:
    """A hash that, unlike ``hash()``, is the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _corpus_relative(path: Path) -> str:
    """``.../music21/corpus/mozart/k155/movement1.mxl`` -> ``mozart/k155/movement1.mxl``."""
    parts = path.parts
    index = len(parts) - 1 - parts[::-1].index("corpus")
    return "/".join(parts[index + 1:])


def _suffix_rank(path) -> int:
    suffix = Path(str(path)).suffix.lower()
    return MUSIC21_SCORE_SUFFIXES.index(suffix) if suffix in MUSIC21_SCORE_SUFFIXES else len(MUSIC21_SCORE_SUFFIXES)
