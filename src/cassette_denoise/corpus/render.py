"""Rendering music21 scores to audio through FluidSynth, with drawn instruments, pan, tempo and key.

Everything random is drawn from the generator the caller passes (seeded per piece) and returned as
:class:`RenderParams`, so the manifest records exactly how each file was made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cassette_denoise.audio import MODEL_SAMPLE_RATE, read_resampled
from cassette_denoise.corpus.levels import (
    DEFAULT_MAX_FILE_S,
    cut_with_fade,
    normalise_peak,
    sample_peak_dbfs,
    to_stereo,
    trim_silence,
)
from cassette_denoise.corpus.sources import CorpusError, import_music21
from cassette_denoise.defaults import DEFAULT_SOUNDFONT


FLUIDSYNTH_APT_PACKAGES = "fluidsynth fluid-soundfont-gm"


# FluidSynth mixes every voice into one bus; 0.5 keeps dense scores well clear of 0 dBFS. The level is
# set afterwards by peak normalisation, and rendering to float WAV means nothing clips on the way.
FLUIDSYNTH_GAIN = 0.5


FLUIDSYNTH_TIMEOUT_S = 600


# Notes still sounding at the cut play to their end and reverb rings on; a render this far past the cut is stuck.
RENDER_OVERRUN_S = 60.0


TEMPO_SCALE_RANGE = (0.8, 1.2)


MAX_TRANSPOSE_SEMITONES = 3


PAN_RANGE = (16, 111)  # MIDI CC10: 0 hard left, 64 centre, 127 hard right; hard-panned parts sound unnatural


# General MIDI melodic programs (0-based). Left out: timpani (47) and orchestra hit (55), which are
# one-shot percussion, the synth effects (96-103), and the percussive and sound-effect programs (112-127).
GM_PROGRAMS = tuple(p for p in range(112) if p not in (47, 55) and not 96 <= p <= 103)


# One-based MIDI channels for parts; channel 10 is General MIDI's drum kit.
MELODIC_CHANNELS = tuple(c for c in range(1, 17) if c != 10)


DEFAULT_USEC_PER_QUARTER = 500_000  # MIDI's implied tempo (120 bpm) when a file sets none


@dataclass(frozen=True)
class RenderParams:
    """How one music21 piece is turned into audio; one program and pan per MIDI voice (part)."""

    programs: tuple[int, ...]
    pans: tuple[int, ...]
    tempo_scale: float
    transpose_semitones: int
    peak_dbfs: float


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
    midi = import_music21().midi
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
    audio = cut_with_fade(trim_silence(audio), max_samples=int(max_duration_s * MODEL_SAMPLE_RATE))
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
        audio, _ = read_resampled(wav_path)
    return to_stereo(audio)


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
    midi = import_music21().midi
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
    midi = import_music21().midi
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
    midi = import_music21().midi
    tick, timed = 0, []
    for event in track.events:
        if isinstance(event, midi.DeltaTime):
            tick += event.time
        else:
            timed.append((tick, event))
    return timed


def _set_timed_events(track, timed: Iterable[tuple[int, object]]) -> None:
    midi = import_music21().midi
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
    midi = import_music21().midi
    return event.type == midi.ChannelVoiceMessages.NOTE_OFF or (
        event.type == midi.ChannelVoiceMessages.NOTE_ON and event.velocity == 0
    )


def _is_controller(event, number: int) -> bool:
    midi = import_music21().midi
    return event.type == midi.ChannelVoiceMessages.CONTROLLER_CHANGE and event.parameter1 == number
