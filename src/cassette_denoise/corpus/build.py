"""Building a corpus folder: render and decode every piece once, keeping the manifest current after each
file, so that an interrupted build resumes where it stopped and two builds never share a folder."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cassette_denoise.audio import MODEL_SAMPLE_RATE, AudioError, read_resampled, write_audio
from cassette_denoise.corpus.levels import (
    DEFAULT_MAX_FILE_S,
    normalise_peak,
    sample_peak_dbfs,
    split_evenly,
    to_stereo,
    trim_silence,
)
from cassette_denoise.corpus.manifest import (
    MANIFEST_NAME,
    CorpusEntry,
    load_manifest,
    minutes_by_split_and_source,
    save_manifest,
)
from cassette_denoise.corpus.render import (
    DEFAULT_SOUNDFONT,
    FLUIDSYNTH_GAIN,
    check_soundfont,
    find_fluidsynth,
    render_score,
)
from cassette_denoise.corpus.sources import (
    SOUNDTRACKS,
    CorpusError,
    Piece,
    SkippedInput,
    Soundtrack,
    Split,
    SplitRequest,
    chorale_pieces,
    distinct,
    import_music21,
    permuted,
    soundtrack_pieces,
    split_for,
    stable_int,
    test_pieces,
    user_pieces,
)

log = logging.getLogger(__name__)

LOCK_NAME = ".build.lock"


MIN_DURATION_S = 5.0


@dataclass(frozen=True)
class CorpusManifest:
    """What :func:`build_corpus` left in ``out_dir``: all entries (this run's and earlier ones)."""

    out_dir: Path
    entries: tuple[CorpusEntry, ...]
    skipped: tuple[SkippedInput, ...]
    files_written: int

    def minutes(self) -> dict[tuple[str, str], float]:
        """Minutes of audio per ``(split, source)``."""
        return minutes_by_split_and_source(self.entries)


# Building and reading the corpus


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    split: SplitRequest,
    max_music21: int,
    seed: int,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    user_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    max_test_music21: int | None = None,
    max_file_s: float = DEFAULT_MAX_FILE_S,
    soundtracks: Sequence[Soundtrack] | None = None,
) -> CorpusManifest:
    """Render and decode clean music into ``out_dir`` (resumable: finished files are kept).

    Args:
        split: ``train`` (chorales, soundtracks, user music; ~5 % marked validation), ``test`` (other
            composers) or ``all``.
        max_music21: how many Bach chorales to render for training, chosen at random by ``seed``.
        max_test_music21: how many test pieces to render, taken in turn from each test composer;
            ``None`` means ``max_music21``.
        max_file_s: longer music21 pieces keep their opening this long; longer audio files are cut into
            equal parts no longer than this.
        soundtracks: the soundtrack folders to decode (default :data:`SOUNDTRACKS`, the Debian packages);
            those not installed are skipped with a warning.
        progress: called with one line per finished, reused or skipped piece.

    Raises:
        CorpusError: music21, FluidSynth or the sound font is missing where needed, the user folder does not
            exist, or ``out_dir`` holds an unreadable manifest.
    """
    _check_options(split=split, max_music21=max_music21, max_test_music21=max_test_music21, max_file_s=max_file_s)
    max_test = max_music21 if max_test_music21 is None else max_test_music21
    chorale_count = max_music21 if split in ("train", "all") else 0
    test_count = max_test if split in ("test", "all") else 0
    if chorale_count or test_count:
        import_music21()
        find_fluidsynth()
        check_soundfont(soundfont)

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(Path(out_dir) / LOCK_NAME):
        builder = _Builder(Path(out_dir), seed=seed, soundfont=Path(soundfont), max_file_s=max_file_s,
                           progress=progress or (lambda line: None))
        if split in ("train", "all"):
            pieces, skipped = soundtrack_pieces(SOUNDTRACKS if soundtracks is None else soundtracks)
            builder.skipped.extend(skipped)
            if user_dir is not None:
                pieces += user_pieces(user_dir)
            for number, piece in enumerate(pieces, 1):
                builder.add_file(piece, f"{number}/{len(pieces)}")
            if chorale_count:  # a corpus of the user's own music needs no music21
                # The whole catalogue is shuffled and repeats dropped afterwards, so a seed's choice of
                # chorales follows the catalogue's numbering, repeats and all.
                chorales = distinct(permuted(chorale_pieces(), seed, "chorales"))
                builder.add_music21([chorales], chorale_count)
        if test_count:
            by_composer = {c: permuted(p, seed, f"test/{c}") for c, p in test_pieces().items()}
            builder.add_music21(list(by_composer.values()), test_count)
        return builder.result()


def _check_options(*, split: str, max_music21: int, max_test_music21: int | None, max_file_s: float) -> None:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if max_music21 < 0 or (max_test_music21 is not None and max_test_music21 < 0):
        raise ValueError(f"piece counts must be >= 0, got {max_music21} and {max_test_music21}")
    if max_file_s < 2 * MIN_DURATION_S:
        raise ValueError(f"max_file_s must be at least {2 * MIN_DURATION_S} s, got {max_file_s}")


class _Builder:
    """Writes files and keeps the manifest current after each one, so an interrupted run resumes."""

    def __init__(self, out_dir: Path, *, seed: int, soundfont: Path, max_file_s: float,
                 progress: Callable[[str], None]):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir.absolute()
        self.seed, self.soundfont, self.max_file_s, self.progress = seed, soundfont, max_file_s, progress
        self.skipped: list[SkippedInput] = []
        self.files_written = 0
        self.entries: dict[str, CorpusEntry] = {}
        if (self.out_dir / MANIFEST_NAME).exists():
            for entry in load_manifest(self.out_dir):
                if entry.path.exists():
                    self.entries[str(entry.path)] = entry
                else:
                    log.warning("%s: listed in the manifest but missing; it will be made again", entry.path)

    def result(self) -> CorpusManifest:
        return CorpusManifest(self.out_dir, tuple(sorted(self.entries.values(), key=lambda e: str(e.path))),
                              tuple(self.skipped), self.files_written)

    def _done(self, piece: Piece) -> list[CorpusEntry]:
        return [entry for entry in self.entries.values() if entry.params.get("piece") == piece.key]

    def _folder(self, piece: Piece, split: Split) -> Path:
        folder = self.out_dir / ("test" if split == "test" else "train") / piece.source
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _rng(self, piece: Piece) -> np.random.Generator:
        # Seeded by the piece as well as the run's seed: a piece's draws do not depend on which other
        # pieces were rendered before it, so resumed and fresh runs agree.
        return np.random.default_rng([self.seed, stable_int(piece.key)])

    def _skip(self, piece: Piece, reason: str, counter: str) -> None:
        log.warning("%s: skipped (%s)", piece.origin, reason)
        self.skipped.append(SkippedInput(piece.source, piece.name, reason))
        self.progress(f"{counter} {piece.key}: skipped ({reason})")

    def _record(self, new: list[CorpusEntry]) -> None:
        for entry in new:
            self.entries[str(entry.path)] = entry
        self.files_written += len(new)
        save_manifest(self.out_dir, self.entries.values())

    def add_music21(self, groups: Sequence[Sequence[Piece]], count: int) -> None:
        """Put ``count`` pieces into the corpus, taking one from each group in turn.

        A piece that fails is replaced by the next one of its group, so that a short test set still
        spans every composer.
        """
        queues = [iter(group) for group in groups]
        finished = 0
        while queues and finished < count:
            for queue in list(queues):
                if finished >= count:
                    break
                # any() stops at the first piece that makes it in and leaves the group's rest for later turns.
                if any(self._add_piece(piece, f"[{piece.source} {finished + 1}/{count}]") for piece in queue):
                    finished += 1
                else:
                    queues.remove(queue)  # this group is used up
        if finished < count:
            log.warning("only %d of %d music21 pieces could be rendered", finished, count)

    def _add_piece(self, piece: Piece, counter: str) -> bool:
        """Render one music21 piece unless present; whether it is in the corpus afterwards."""
        if done := self._done(piece):
            self.progress(f"{counter} {piece.key}: already present ({done[0].duration_s:.1f} s)")
            return True
        split = split_for(piece.source, piece.name)
        try:
            entry = self._render(piece, split)
        except (ValueError, AudioError) as error:
            self._skip(piece, str(error), counter)
            return False
        except Exception as error:  # music21 raises many types on scores it cannot read
            self._skip(piece, f"{type(error).__name__}: {error}", counter)
            return False
        self._record([entry])
        self.progress(f"{counter} {piece.key}: rendered {entry.duration_s:.1f} s -> {split}")
        return True

    def _render(self, piece: Piece, split: Split) -> CorpusEntry:
        corpus = import_music21().corpus
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # music21's notation warnings are not problems for rendering
            score = corpus.parse(piece.origin)
        if not hasattr(score, "parts"):
            raise ValueError(f"parsed as a {type(score).__name__}, not a single score")
        if len(score.parts) < 2:
            raise ValueError(f"{len(score.parts)} part(s); only multi-part works are used")
        audio, params = render_score(score, rng=self._rng(piece), soundfont=self.soundfont,
                                     max_duration_s=self.max_file_s)
        if audio.shape[1] < MIN_DURATION_S * MODEL_SAMPLE_RATE:
            raise ValueError(f"only {audio.shape[1] / MODEL_SAMPLE_RATE:.1f} s of sound")
        path = self._folder(piece, split) / f"{piece.name}.flac"
        write_audio(path, audio, MODEL_SAMPLE_RATE, subtype="PCM_16")
        return CorpusEntry(path, split, piece.source, audio.shape[1] / MODEL_SAMPLE_RATE, {
            "piece": piece.key, "origin": f"music21:{piece.origin}", "seed": self.seed,
            "soundfont": self.soundfont.name, "fluidsynth_gain": FLUIDSYNTH_GAIN,
            "programs": list(params.programs), "pans_cc10": list(params.pans),
            "tempo_scale": params.tempo_scale, "transpose_semitones": params.transpose_semitones,
            "peak_dbfs": params.peak_dbfs, "max_file_s": self.max_file_s,
        })

    def add_file(self, piece: Piece, number: str) -> None:
        """Decode, resample, trim and (if long) cut an audio file into the training split."""
        counter = f"[{piece.source} {number}]"
        if done := self._done(piece):
            self.progress(f"{counter} {piece.key}: already present ({sum(e.duration_s for e in done):.1f} s)")
            return
        split = split_for(piece.source, piece.name)
        try:
            audio, sample_rate = read_resampled(piece.origin)
        except AudioError as error:
            self._skip(piece, str(error), counter)
            return
        audio = trim_silence(to_stereo(audio))
        if audio.shape[1] < MIN_DURATION_S * MODEL_SAMPLE_RATE:
            self._skip(piece, f"only {audio.shape[1] / MODEL_SAMPLE_RATE:.1f} s of sound", counter)
            return
        rng = self._rng(piece)
        parts = split_evenly(audio, max_samples=int(self.max_file_s * MODEL_SAMPLE_RATE))
        folder = self._folder(piece, split)
        new = []
        # All parts are written before any is recorded, so a track is either wholly in the manifest or
        # made again; parts share the piece's split, so one track never straddles train and validation.
        for index, (start, part) in enumerate(parts, 1):
            peak_dbfs = sample_peak_dbfs(rng)
            name = piece.name if len(parts) == 1 else f"{piece.name}.part{index}"
            path = folder / f"{name}.flac"
            write_audio(path, normalise_peak(part, peak_dbfs=peak_dbfs), MODEL_SAMPLE_RATE, subtype="PCM_16")
            new.append(CorpusEntry(path, split, piece.source, part.shape[1] / MODEL_SAMPLE_RATE, {
                "piece": piece.key, "origin": str(piece.origin), "seed": self.seed,
                "source_sample_rate": sample_rate, "part": index, "parts": len(parts),
                "start_s": round(start / MODEL_SAMPLE_RATE, 3), "peak_dbfs": peak_dbfs,
            }))
        self._record(new)
        self.progress(f"{counter} {piece.key}: {len(parts)} file(s), {audio.shape[1] / MODEL_SAMPLE_RATE:.1f} s "
                      f"-> {split}")


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """Hold an advisory lock on ``path``: two builds into one folder would overwrite each other's manifest."""
    try:
        import fcntl
    except ImportError:  # not on Windows; one build at a time is then up to the user
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"{path.parent}: another corpus build is writing there") from None
        yield
