"""Clean music for training and testing: rendered from music21's corpus and decoded from soundtracks.

The corpus is a folder of 44.1 kHz stereo 16-bit FLAC files plus ``manifest.json``::

    DIR/train/<source>/<name>.flac     Bach chorales, Debian game soundtracks, the user's own music
    DIR/test/<source>/<name>.flac      music21 works by composers other than Bach
    DIR/manifest.json                  per file: path, split, source, duration_s, params

**The split is by source, never by chance.** Training music is J. S. Bach's chorales (rendered through
FluidSynth), the Debian soundtrack packages and the user's folder; test music is music21 works by other
composers only. No piece, composer or soundtrack can therefore sit on both sides, and a model scored on the
test split is scored on music it has never heard. Within training a fixed ~5 % of the pieces, chosen by a hash
of their names, are marked ``validation``.

Everything random (which chorales, instruments, pan, tempo, transposition, output level) is drawn from a
``numpy.random.Generator`` seeded by ``(seed, piece)``, and written to the manifest. A piece therefore
renders identically whether the run is fresh or resumed, and whichever other pieces were skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from cassette_denoise.audio import (
    MODEL_SAMPLE_RATE,
    AudioError,
    find_audio_files,
    read_audio,
    resample,
    write_audio,
)
from cassette_denoise.defaults import DEFAULT_SOUNDFONT

log = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]
SplitRequest = Literal["train", "test", "all"]

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".build.lock"
MANIFEST_VERSION = 1
VALIDATION_PERCENT = 5

FLUIDSYNTH_APT_PACKAGES = "fluidsynth fluid-soundfont-gm"
# FluidSynth mixes every voice into one bus; 0.5 keeps dense scores well clear of 0 dBFS. The level is
# set afterwards by peak normalisation, and rendering to float WAV means nothing clips on the way.
FLUIDSYNTH_GAIN = 0.5
FLUIDSYNTH_TIMEOUT_S = 600
# Notes still sounding at the cut play to their end and reverb rings on; a render this far past the cut is stuck.
RENDER_OVERRUN_S = 60.0

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

# Render parameter ranges.
PEAK_DBFS_RANGE = (-12.0, -1.0)
TEMPO_SCALE_RANGE = (0.8, 1.2)
MAX_TRANSPOSE_SEMITONES = 3
PAN_RANGE = (16, 111)  # MIDI CC10: 0 hard left, 64 centre, 127 hard right; hard-panned parts sound unnatural
# General MIDI melodic programs (0-based). Left out: timpani (47) and orchestra hit (55), which are
# one-shot percussion, the synth effects (96-103), and the percussive and sound-effect programs (112-127).
GM_PROGRAMS = tuple(p for p in range(112) if p not in (47, 55) and not 96 <= p <= 103)
# One-based MIDI channels for parts; channel 10 is General MIDI's drum kit.
MELODIC_CHANNELS = tuple(c for c in range(1, 17) if c != 10)
DEFAULT_USEC_PER_QUARTER = 500_000  # MIDI's implied tempo (120 bpm) when a file sets none

# A sample is digital silence when it is below the 16-bit step (what the FLAC file can hold) or more than
# 80 dB below the file's peak (a reverb tail nobody hears).
SILENCE_FLOOR = 2.0 ** -15
SILENCE_BELOW_PEAK_DB = 80.0
MIN_DURATION_S = 5.0
FADE_OUT_S = 2.0
DEFAULT_MAX_FILE_S = 150.0


class CorpusError(Exception):
    """A setup problem (no FluidSynth, sound font, music21, folder or manifest) or a failed FluidSynth render."""


@dataclass(frozen=True)
class CorpusEntry:
    """One file of the corpus.

    ``path`` is absolute; ``params`` holds what was drawn and applied to make the file (not compared).
    """

    path: Path
    split: Split
    source: str
    duration_s: float
    params: Mapping[str, object] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SkippedInput:
    """A piece or file that was left out of the corpus, and why."""

    source: str
    name: str
    reason: str


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


@dataclass(frozen=True)
class RenderParams:
    """How one music21 piece is turned into audio; one program and pan per MIDI voice (part)."""

    programs: tuple[int, ...]
    pans: tuple[int, ...]
    tempo_scale: float
    transpose_semitones: int
    peak_dbfs: float


# ---------------------------------------------------------------------------------------------------
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
    return _stable_int(f"{source}/{name}") % 100 < VALIDATION_PERCENT


def chorale_pieces() -> list[Piece]:
    """Bach's four-part chorales in music21's corpus, by Riemenschneider number.

    The catalogue lists 21 chorales under two numbers each; they appear twice here.
    """
    corpus = _music21().corpus
    names = corpus.chorales.Iterator(returnType="filename")
    return [Piece(CHORALE_SOURCE, _slug(name.split("/", 1)[-1]), name) for name in names]


def test_pieces() -> dict[str, list[Piece]]:
    """Candidate test pieces per composer: music21 scores by :data:`TEST_COMPOSERS` (sorted).

    The same work is often stored twice (``.krn`` and ``.mxl``); it is listed once, preferring MusicXML.

    Raises:
        CorpusError: if a candidate turns out to be a Bach chorale (a broken corpus or composer list).
    """
    corpus = _music21().corpus
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


# ---------------------------------------------------------------------------------------------------
# Rendering music21 scores


def sample_render_params(rng: np.random.Generator, *, voices: int) -> RenderParams:
    """Draw instruments, pan, tempo, transposition and output level for a piece with ``voices`` parts.

    Values are rounded to what the manifest records, so the manifest reproduces the render exactly.
    """
    return RenderParams(
        programs=tuple(int(p) for p in rng.choice(GM_PROGRAMS, size=voices)),
        pans=tuple(int(p) for p in rng.integers(PAN_RANGE[0], PAN_RANGE[1] + 1, size=voices)),
        tempo_scale=round(float(rng.uniform(*TEMPO_SCALE_RANGE)), 3),
        transpose_semitones=int(rng.integers(-MAX_TRANSPOSE_SEMITONES, MAX_TRANSPOSE_SEMITONES + 1)),
        peak_dbfs=sample_peak_dbfs(rng),
    )


def sample_peak_dbfs(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*PEAK_DBFS_RANGE)), 2)


def render_score(
    score,
    *,
    rng: np.random.Generator,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    max_duration_s: float = DEFAULT_MAX_FILE_S,
) -> tuple[np.ndarray, RenderParams]:
    """Render a music21 score with random instruments, pan, tempo and key through FluidSynth.

    Pieces longer than ``max_duration_s`` keep their opening, faded out over the last 2 s.

    Returns:
        ``(audio, params)``: float32 ``(2, samples)`` at :data:`MODEL_SAMPLE_RATE`, trimmed of leading and
        trailing silence, with its sample peak at ``params.peak_dbfs``.

    Raises:
        CorpusError: FluidSynth or the sound font is missing, or FluidSynth failed.
        ValueError: the score holds no notes or renders to silence.
    """
    midi = _music21().midi
    with warnings.catch_warnings():
        # music21 warns about notation it simplifies for MIDI; that is expected here, not news.
        warnings.simplefilter("ignore")
        midi_file = midi.translate.streamToMidiFile(score)
    tracks = [track for track in midi_file.tracks if track.hasNotes()]
    if not tracks:
        raise ValueError("the score holds no notes")
    params = sample_render_params(rng, voices=min(len(tracks), len(MELODIC_CHANNELS)))
    midi_bytes = _apply_render_params(midi_file, tracks, params, max_duration_s=max_duration_s)
    audio = render_midi(midi_bytes, soundfont=soundfont, max_duration_s=max_duration_s + RENDER_OVERRUN_S)
    audio = _cut_with_fade(trim_silence(audio), max_samples=int(max_duration_s * MODEL_SAMPLE_RATE))
    return normalise_peak(audio, peak_dbfs=params.peak_dbfs), params


def render_midi(
    midi_bytes: bytes,
    *,
    soundfont: str | os.PathLike = DEFAULT_SOUNDFONT,
    gain: float = FLUIDSYNTH_GAIN,
    max_duration_s: float = DEFAULT_MAX_FILE_S + RENDER_OVERRUN_S,
) -> np.ndarray:
    """Render a standard MIDI file with the ``fluidsynth`` program.

    FluidSynth keeps rendering while any note sounds, so a note left on renders for ever; the render is
    stopped, and fails, once it grows past ``max_duration_s``.

    Returns:
        float32 ``(2, samples)`` at :data:`MODEL_SAMPLE_RATE`.
    """
    program = find_fluidsynth()
    soundfont = check_soundfont(soundfont)
    with tempfile.TemporaryDirectory(prefix="cassette-denoise-render-") as folder:
        midi_path, wav_path, log_path = (Path(folder) / name for name in ("in.mid", "out.wav", "fluidsynth.log"))
        midi_path.write_bytes(midi_bytes)
        # Float WAV so that no voice clips before the peak is normalised. Chorus off (-C 0): FluidSynth's
        # stereo chorus comes out largely in antiphase (left/right correlation -0.8 to -0.9 on FluidR3's
        # synth pads, strings and brass): music that cancels when summed to mono, which real recordings rarely do.
        command = [
            program, "-ni", "-C", "0", "-F", str(wav_path), "-T", "wav", "-O", "float",
            "-r", str(MODEL_SAMPLE_RATE), "-g", f"{gain:g}", str(soundfont), str(midi_path),
        ]
        max_bytes = int(max_duration_s * MODEL_SAMPLE_RATE) * 2 * 4 + 4096  # stereo float32 plus header
        deadline = time.monotonic() + FLUIDSYNTH_TIMEOUT_S
        with open(log_path, "w") as log_file:
            # Output to a file, not a pipe: a pipe nobody reads while polling can fill and stall FluidSynth.
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                while process.poll() is None:
                    if wav_path.exists() and wav_path.stat().st_size > max_bytes:
                        raise CorpusError(f"fluidsynth rendered more than {max_duration_s:.0f} s; a note never ends")
                    if time.monotonic() > deadline:
                        raise CorpusError(f"fluidsynth did not finish within {FLUIDSYNTH_TIMEOUT_S} s")
                    time.sleep(0.05)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if process.returncode != 0 or not wav_path.exists():
            detail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise CorpusError(f"fluidsynth failed (exit {process.returncode}): {detail[0]}")
        audio, sample_rate = read_audio(wav_path)
    return _to_stereo(resample(audio, sample_rate, MODEL_SAMPLE_RATE))


def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` program; raises :class:`CorpusError` naming the packages if absent."""
    program = shutil.which("fluidsynth")
    if program is None:
        raise CorpusError(
            f"the fluidsynth program is not installed (Debian/Ubuntu: sudo apt install {FLUIDSYNTH_APT_PACKAGES})"
        )
    return program


def check_soundfont(soundfont: str | os.PathLike) -> Path:
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise CorpusError(
            f"{soundfont}: sound font not found (Debian/Ubuntu: sudo apt install {FLUIDSYNTH_APT_PACKAGES},"
            " or pass another General MIDI .sf2)"
        )
    return soundfont


def _apply_render_params(midi_file, tracks, params: RenderParams, *, max_duration_s: float) -> bytes:
    """Set tempo, transposition, programs and pan on music21's MIDI, drop notes past the cut, serialise.

    Editing the MIDI rather than the score keeps this independent of how each score spells its
    instruments and tempi: music21 puts every part on channel 1, so each part gets its own channel here.
    """
    midi = _music21().midi
    ticks_per_quarter = midi_file.ticksPerQuarterNote
    tempo_map = []
    for track in midi_file.tracks:
        for tick, event in _timed_events(track):
            if event.type == midi.MetaEvents.SET_TEMPO:
                usec = round(int.from_bytes(event.data, "big") / params.tempo_scale)
                event.data = min(usec, 0xFFFFFF).to_bytes(3, "big")
                tempo_map.append((tick, int.from_bytes(event.data, "big")))
    if not tempo_map or min(tick for tick, _ in tempo_map) > 0:
        usec = round(DEFAULT_USEC_PER_QUARTER / params.tempo_scale)
        conductor = midi_file.tracks[0]
        tempo = midi.MidiEvent(conductor, type=midi.MetaEvents.SET_TEMPO, channel=None)
        tempo.data = usec.to_bytes(3, "big")
        _set_timed_events(conductor, [(0, tempo), *_timed_events(conductor)])
        tempo_map.append((0, usec))
    tempo_map.sort()
    # Notes that start after the cut are dropped so FluidSynth does not render audio that is thrown away;
    # the ones already sounding end normally and the audio is cut and faded afterwards.
    cut_tick = _tick_at_seconds(max_duration_s, tempo_map, ticks_per_quarter)
    # Two seconds after the last event so that FluidSynth renders the release and reverb tails.
    tail_ticks = _tick_at_seconds(2.0, [(0, tempo_map[-1][1])], ticks_per_quarter)

    for index, track in enumerate(tracks):
        voice = index % len(MELODIC_CHANNELS)
        channel = MELODIC_CHANNELS[voice]
        kept = []
        for tick, event in _timed_events(track):
            if event.type in (midi.ChannelVoiceMessages.PROGRAM_CHANGE, midi.MetaEvents.END_OF_TRACK):
                continue  # replaced below
            if _is_controller(event, 10):
                continue
            if tick > cut_tick and not _is_note_off(event):
                continue
            if event.type in midi.ChannelVoiceMessages:
                event.channel = channel
                if event.type in (midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF):
                    event.pitch = int(np.clip(event.pitch + params.transpose_semitones, 0, 127))
            kept.append((tick, event))
        kept = _pair_notes(kept)
        program = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.PROGRAM_CHANGE, channel=channel)
        program.data = params.programs[voice]
        pan = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.CONTROLLER_CHANGE, channel=channel)
        pan.parameter1, pan.parameter2 = 10, params.pans[voice]
        _set_timed_events(track, [(0, program), (0, pan), *kept])

    last_tick = max(tick for track in tracks for tick, _ in _timed_events(track))
    for track in midi_file.tracks:
        kept = [(tick, event) for tick, event in _timed_events(track)
                if event.type != midi.MetaEvents.END_OF_TRACK and tick <= last_tick]
        end = midi.MidiEvent(track, type=midi.MetaEvents.END_OF_TRACK, channel=None)
        end.data = b""
        _set_timed_events(track, [*kept, (last_tick + tail_ticks, end)])
    return midi_file.writestr()


def _pair_notes(timed: list[tuple[int, object]]) -> list[tuple[int, object]]:
    """Drop zero-length notes and end notes left on, so that every note-on has its note-off.

    music21 writes a grace note as a note-on and note-off at the same tick, note-off first; that note
    would never end, and FluidSynth renders until every note has ended. An unmatched note-off at a tick
    is therefore taken as the end of a zero-length note, whose note-on at the same tick is dropped too.
    """
    midi = _music21().midi
    active: dict[tuple[int, int], int] = defaultdict(int)
    orphan_offs: dict[tuple[int, int, int], int] = defaultdict(int)
    paired = []
    for tick, event in timed:
        if event.type in (midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF):
            key = (event.channel, event.pitch)
            if _is_note_off(event):
                if active[key] == 0:
                    orphan_offs[(tick, *key)] += 1
                    continue
                active[key] -= 1
            elif orphan_offs[(tick, *key)]:
                orphan_offs[(tick, *key)] -= 1
                continue
            else:
                active[key] += 1
        paired.append((tick, event))
    last_tick = max((tick for tick, _ in paired), default=0)
    for (channel, pitch), count in active.items():
        for _ in range(count):
            off = midi.MidiEvent(type=midi.ChannelVoiceMessages.NOTE_OFF, channel=channel)
            off.pitch, off.velocity = pitch, 0
            paired.append((last_tick, off))
    return paired


def _timed_events(track) -> list[tuple[int, object]]:
    """A music21 MIDI track's events with absolute tick times (its delta times folded in)."""
    midi = _music21().midi
    tick, timed = 0, []
    for event in track.events:
        if isinstance(event, midi.DeltaTime):
            tick += event.time
        else:
            timed.append((tick, event))
    return timed


def _set_timed_events(track, timed: Iterable[tuple[int, object]]) -> None:
    midi = _music21().midi
    events, previous = [], 0
    for tick, event in sorted(timed, key=lambda pair: pair[0]):  # stable: same-tick order is kept
        events.append(midi.DeltaTime(track, time=tick - previous))
        events.append(event)
        previous = tick
    track.events = events
    track.updateEvents()


def _tick_at_seconds(seconds: float, tempo_map: Sequence[tuple[int, int]], ticks_per_quarter: int) -> int:
    """The tick reached after ``seconds``, following ``(tick, microseconds per quarter)`` changes."""
    elapsed_s, previous_tick, usec = 0.0, 0, DEFAULT_USEC_PER_QUARTER
    for tick, next_usec in tempo_map:
        span_s = (tick - previous_tick) * usec / ticks_per_quarter / 1e6
        if elapsed_s + span_s >= seconds:
            break
        elapsed_s, previous_tick, usec = elapsed_s + span_s, tick, next_usec
    return previous_tick + int((seconds - elapsed_s) * 1e6 * ticks_per_quarter / usec)


def _is_note_off(event) -> bool:
    midi = _music21().midi
    return event.type == midi.ChannelVoiceMessages.NOTE_OFF or (
        event.type == midi.ChannelVoiceMessages.NOTE_ON and event.velocity == 0
    )


def _is_controller(event, number: int) -> bool:
    midi = _music21().midi
    return event.type == midi.ChannelVoiceMessages.CONTROLLER_CHANGE and event.parameter1 == number


# ---------------------------------------------------------------------------------------------------
# Levels and lengths


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Drop leading and trailing digital silence from ``(channels, samples)`` audio."""
    level = np.abs(audio).max(axis=0)
    peak = float(level.max(initial=0.0))
    threshold = max(SILENCE_FLOOR, peak * 10.0 ** (-SILENCE_BELOW_PEAK_DB / 20.0))
    loud = np.flatnonzero(level > threshold)
    if loud.size == 0:
        return audio[:, :0]
    return audio[:, loud[0]: loud[-1] + 1]


def normalise_peak(audio: np.ndarray, *, peak_dbfs: float) -> np.ndarray:
    """Scale ``(channels, samples)`` audio so that its sample peak is ``peak_dbfs``."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak == 0.0:
        raise ValueError("cannot normalise silence")
    return (audio * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def _cut_with_fade(audio: np.ndarray, *, max_samples: int) -> np.ndarray:
    if audio.shape[1] <= max_samples:
        return audio
    audio = audio[:, :max_samples].copy()
    # A raised-cosine fade: a hard cut would be a click that the denoiser might learn to keep.
    fade = min(int(FADE_OUT_S * MODEL_SAMPLE_RATE), max_samples)
    audio[:, max_samples - fade:] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fade))).astype(np.float32)
    return audio


def _split_evenly(audio: np.ndarray, *, max_samples: int) -> list[tuple[int, np.ndarray]]:
    """Cut long audio into equal consecutive parts of at most ``max_samples``; returns ``(start, part)``."""
    count = max(1, math.ceil(audio.shape[1] / max_samples))
    bounds = np.linspace(0, audio.shape[1], count + 1).round().astype(int)
    return [(int(start), audio[:, start:end]) for start, end in zip(bounds[:-1], bounds[1:])]


def _to_stereo(audio: np.ndarray) -> np.ndarray:
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    # Files with more channels keep the front left/right pair (the first two in WAV, FLAC and Ogg order).
    return np.ascontiguousarray(audio[:2])


# ---------------------------------------------------------------------------------------------------
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
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if max_music21 < 0 or (max_test_music21 is not None and max_test_music21 < 0):
        raise ValueError(f"piece counts must be >= 0, got {max_music21} and {max_test_music21}")
    if max_file_s < 2 * MIN_DURATION_S:
        raise ValueError(f"max_file_s must be at least {2 * MIN_DURATION_S} s, got {max_file_s}")
    max_test = max_music21 if max_test_music21 is None else max_test_music21
    chorale_count = max_music21 if split in ("train", "all") else 0
    test_count = max_test if split in ("test", "all") else 0
    if chorale_count or test_count:
        _music21()
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
            # The whole catalogue is shuffled and repeats dropped afterwards, so a seed's order of chorales is
            # that of the catalogue's numbers (and the same as in corpora built before repeats were dropped).
            chorales = _distinct(_permuted(chorale_pieces(), seed, "chorales"))
            builder.add_music21([chorales], chorale_count)
        if split in ("test", "all"):
            by_composer = {c: _permuted(p, seed, f"test/{c}") for c, p in test_pieces().items()}
            builder.add_music21(list(by_composer.values()), test_count)
        return builder.result()


def load_manifest(out_dir: str | os.PathLike) -> list[CorpusEntry]:
    """The entries of ``out_dir/manifest.json``, with absolute paths.

    Raises:
        CorpusError: no manifest, not valid JSON, another format version, or an entry lacking a field.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorpusError(f"{path}: no corpus manifest (build one with `cassette-denoise corpus`)") from None
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(document, dict):
        raise CorpusError(f"{path}: manifest is not a JSON object")
    if document.get("format_version") != MANIFEST_VERSION:
        raise CorpusError(f"{path}: manifest format {document.get('format_version')!r}, expected {MANIFEST_VERSION}")
    entries = []
    for number, item in enumerate(document.get("entries", [])):
        try:
            entry = CorpusEntry(
                path=Path(out_dir).absolute() / item["path"], split=item["split"], source=item["source"],
                duration_s=float(item["duration_s"]), params=dict(item.get("params", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CorpusError(f"{path}: entry {number} is malformed ({error!r})") from None
        if entry.split not in ("train", "validation", "test"):
            raise CorpusError(f"{path}: entry {number} has unknown split {entry.split!r}")
        entries.append(entry)
    return entries


def save_manifest(out_dir: str | os.PathLike, entries: Iterable[CorpusEntry]) -> Path:
    """Write ``out_dir/manifest.json`` atomically (paths relative to ``out_dir``, sorted)."""
    out_dir = Path(out_dir).absolute()
    rows = [
        {"path": entry.path.absolute().relative_to(out_dir).as_posix(), "split": entry.split,
         "source": entry.source, "duration_s": round(entry.duration_s, 3), "params": dict(entry.params)}
        for entry in entries
    ]
    document = {
        "format_version": MANIFEST_VERSION,
        "sample_rate": MODEL_SAMPLE_RATE,
        "entries": sorted(rows, key=lambda row: row["path"]),
    }
    path = out_dir / MANIFEST_NAME
    handle, temporary = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".partial", dir=out_dir)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the manifest is as readable as the audio
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def minutes_by_split_and_source(entries: Iterable[CorpusEntry]) -> dict[tuple[str, str], float]:
    """Minutes of audio per ``(split, source)``, sorted by split then source."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for entry in entries:
        totals[(entry.split, entry.source)] += entry.duration_s / 60.0
    order = {"train": 0, "validation": 1, "test": 2}
    return dict(sorted(totals.items(), key=lambda item: (order.get(item[0][0], 3), item[0][1])))


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
        return np.random.default_rng([self.seed, _stable_int(piece.key)])

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
        corpus = _music21().corpus
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
            audio, sample_rate = read_audio(piece.origin)
        except AudioError as error:
            self._skip(piece, str(error), counter)
            return
        audio = trim_silence(_to_stereo(resample(audio, sample_rate, MODEL_SAMPLE_RATE)))
        if audio.shape[1] < MIN_DURATION_S * MODEL_SAMPLE_RATE:
            self._skip(piece, f"only {audio.shape[1] / MODEL_SAMPLE_RATE:.1f} s of sound", counter)
            return
        rng = self._rng(piece)
        parts = _split_evenly(audio, max_samples=int(self.max_file_s * MODEL_SAMPLE_RATE))
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


# ---------------------------------------------------------------------------------------------------
# Helpers


def _music21():
    try:
        import music21
        import music21.corpus.chorales  # noqa: F401  (a submodule the package does not import itself)
    except ImportError:
        raise CorpusError("music21 is not installed (pip install 'cassette-denoise[train]')") from None
    return music21


def _permuted(pieces: Sequence[Piece], seed: int, purpose: str) -> list[Piece]:
    rng = np.random.default_rng([seed, _stable_int(purpose)])
    return [pieces[i] for i in rng.permutation(len(pieces))]


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


def _distinct(pieces: Iterable[Piece]) -> list[Piece]:
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
            name = f"{name}-{_stable_int(str(path.relative_to(folder))) % 16**6:06x}"
        used.add(name)
        pieces.append(Piece(source, name, str(path)))
    return pieces


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug or "untitled"


def _stable_int(text: str) -> int:
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
