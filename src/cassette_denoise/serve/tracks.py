"""The server's state: a private folder of uploads, what the model computed for each, and the workers.

Each upload gets a random id and a folder of its own inside one private temporary folder (mode 0700)
that :meth:`Workspace.close` removes; the name the user gave a file is only ever displayed, never
joined to a path. One denoise runs per worker (one per core by default); re-renders for the page
have workers of their own, so moving a slider never waits behind another file's network pass: one for
the few seconds the page plays first, one for whole files and pictures, so the first never waits for
the second.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cassette_denoise.audio import (
    AUDIO_SUFFIXES, MODEL_SAMPLE_RATE, AtomicAudioWriter, AudioError, AudioInfo, Resampler, iter_blocks, output_length, probe,
)
from cassette_denoise.denoiser import BLOCK_FRAMES, DEFAULT_STRENGTH_DB, Denoiser, mask_exponents
from cassette_denoise.serve import render

log = logging.getLogger(__name__)

#: libsndfile's container names and the suffix a file of each gets (the suffix picks the output format).
SUFFIXES = {"WAV": ".wav", "WAVEX": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MPEG": ".mp3", "AIFF": ".aiff",
            "AU": ".au", "W64": ".w64", "CAF": ".caf"}
#: Download formats besides the input's own.
EXPORT_FORMATS = {"wav": "WAV", "flac": "FLAC"}
#: Ranges up to this long are previews (what the page plays first after a change) and have their own worker.
PREVIEW_MAX_S = 30.0
#: Model-rate samples rendered beyond each end of a requested range, so that resampling a range back
#: to the file's rate has settled by the range's first sample.
RESAMPLE_MARGIN = 4096


class Superseded(Exception):
    """A whole-file render that a newer request for the same file has made pointless."""


class Recording:
    """A :class:`~cassette_denoise.tiles.MaskTap` that keeps everything it is handed."""

    def __init__(self):
        self._audio: list[np.ndarray] = []
        self._masks: list[torch.Tensor] = []

    def model_audio(self, block: np.ndarray) -> None:
        self._audio.append(np.array(block, dtype=np.float32))

    def mask(self, mask: torch.Tensor) -> None:
        self._masks.append(mask.clone())

    def audio(self) -> np.ndarray:
        """``(channels, samples)`` at the model rate."""
        return np.concatenate(self._audio, axis=1)

    def masks(self) -> torch.Tensor:
        """``(channels, BINS, frames)``."""
        return torch.cat(self._masks, dim=-1)


@dataclass
class Track:
    """One uploaded file and what the model computed for it."""

    id: str
    #: As the user named it: for display and the download's name only.
    name: str
    folder: Path
    #: The name's suffix if it is one of the audio suffixes the package knows, else empty: libsndfile
    #: reads most formats by their content, but some only by the suffix.
    suffix: str = ""
    state: str = "queued"  # queued → running → done | error
    progress: float = 0.0
    error: str | None = None
    info: AudioInfo | None = None
    #: ``(channels, samples)`` at the model rate: after the hum stage, and without it.
    audio_dehummed: np.ndarray | None = field(default=None, repr=False)
    audio_plain: np.ndarray | None = field(default=None, repr=False)
    #: ``(channels, BINS, frames)``: the model's mask raised to its exponent (render.shape_mask).
    shaped_mask: torch.Tensor | None = field(default=None, repr=False)
    #: Counts whole-file render requests; a queued one that is no longer the latest is skipped.
    render_ticket: int = 0

    @property
    def input_path(self) -> Path:
        return self.folder / f"input{self.suffix}"

    @property
    def before_path(self) -> Path:
        """The input as 16-bit WAV at its own rate: what the page plays as "before"."""
        return self.folder / "before.wav"

    def summary(self) -> dict:
        """What the page shows about the file, JSON-ready."""
        out = {"id": self.id, "name": self.name, "state": self.state, "progress": round(self.progress, 4),
               "error": self.error}
        if self.info is not None:
            out |= {"duration_s": self.info.duration_s, "sample_rate": self.info.sample_rate,
                    "channels": self.info.channels, "format": self.info.format, "subtype": self.info.subtype}
        return out

    def user_message(self, error: Exception) -> str:
        """An error's message with the private path replaced by the name the user knows."""
        return str(error).replace(str(self.input_path), self.name)

    def model_audio(self, *, remove_hum: bool) -> np.ndarray:
        return self.audio_dehummed if remove_hum else self.audio_plain


def analyse(track: Track, denoiser: Denoiser) -> None:
    """Run the model over a file once, keeping its mask and the audio the mask applies to.

    Also writes the "before" WAV. Updates ``track.progress`` block by block. The denoiser must
    have its hum stage on; the audio without it is kept as well, for the page's hum switch.

    Raises:
        AudioError: the upload is not audio the package can process.
    """
    info = probe(track.input_path)
    track.info = info
    recording = Recording()
    stream = denoiser.stream(channels=info.channels, sample_rate=info.sample_rate,
                             strength_db=DEFAULT_STRENGTH_DB, tap=recording)
    plain = Resampler(info.sample_rate, MODEL_SAMPLE_RATE, info.channels)
    plain_blocks, done = [], 0
    with AtomicAudioWriter(track.before_path, sample_rate=info.sample_rate, channels=info.channels,
                           subtype="PCM_16") as before:
        for block in iter_blocks(info, block_frames=BLOCK_FRAMES):
            before.write(np.clip(block, -1.0, 1.0))
            plain_blocks.append(plain.process(block))
            stream.process(block)
            done += block.shape[1]
            track.progress = 0.99 * done / info.frames
    stream.finish()
    plain_blocks.append(plain.flush(total_out=output_length(info.frames, info.sample_rate, MODEL_SAMPLE_RATE)))
    track.audio_plain = np.concatenate(plain_blocks, axis=1)
    track.audio_dehummed = recording.audio()
    exponent = mask_exponents(denoiser.mask_exponent, denoiser.treble_mask_exponent)
    track.shaped_mask = render.shape_mask(recording.masks(), exponent=exponent)


def render_range(track: Track, *, strength_db: float, remove_hum: bool, start_s: float,
                 end_s: float) -> np.ndarray:
    """The output for ``[start_s, end_s)`` at the file's own rate, from the kept mask (no network).

    Returns:
        ``(channels, samples)`` float32; empty if the range lies outside the file.
    """
    info = track.info
    first = int(np.clip(round(start_s * info.sample_rate), 0, info.frames))
    last = int(np.clip(round(end_s * info.sample_rate), first, info.frames))
    if last == first:
        return np.zeros((info.channels, 0), np.float32)
    audio = track.model_audio(remove_hum=remove_hum)
    ratio = MODEL_SAMPLE_RATE / info.sample_rate
    if ratio == 1:
        return render.resynthesise(audio, track.shaped_mask, strength_db=strength_db, start=first, stop=last)
    # The range starts on a sample that both rates share, so the resampled range lines up with the whole
    # file's resampling to the sample (a fraction of a sample off is audible as a comb in "removed").
    step = MODEL_SAMPLE_RATE // math.gcd(MODEL_SAMPLE_RATE, info.sample_rate)
    start = max(0, int(first * ratio) - RESAMPLE_MARGIN) // step * step
    stop = min(audio.shape[1], int(np.ceil(last * ratio)) + RESAMPLE_MARGIN)
    segment = render.resynthesise(audio, track.shaped_mask, strength_db=strength_db, start=start, stop=stop)
    resampler = Resampler(MODEL_SAMPLE_RATE, info.sample_rate, info.channels)
    offset = start * info.sample_rate // MODEL_SAMPLE_RATE
    total = output_length(stop - start, MODEL_SAMPLE_RATE, info.sample_rate)
    resampled = np.concatenate([resampler.process(segment), resampler.flush(total_out=total)], axis=1)
    return resampled[:, first - offset: last - offset]


def spectrogram(track: Track, *, which: str, strength_db: float, remove_hum: bool, start_s: float,
                end_s: float) -> bytes:
    """A PNG of the input (``which="before"``) or the output (``"after"``) over a time range."""
    if which not in ("before", "after"):
        raise ValueError(f"spectrogram must be of 'before' or 'after', got {which!r}")
    audio = track.audio_plain if which == "before" else track.model_audio(remove_hum=remove_hum)
    frames = render.column_frames(track.shaped_mask.shape[-1], start_s=start_s, end_s=end_s)
    mask = track.shaped_mask if which == "after" else None
    return render.spectrogram_png(render.levels_db(audio, mask, frames, strength_db=strength_db))


def noise_floor(track: Track, *, strength_db: float, remove_hum: bool) -> dict:
    """The noise floor per frequency before and after, and its level in the hiss band, JSON-ready."""
    frames = render.floor_frames(track.shaped_mask.shape[-1])
    before = render.noise_floor_db(render.levels_db(track.audio_plain, None, frames, strength_db=strength_db))
    after = render.noise_floor_db(render.levels_db(track.model_audio(remove_hum=remove_hum), track.shaped_mask,
                                                   frames, strength_db=strength_db))
    step = render.SPECTROGRAM_BIN_STEP
    frequencies = render.spectral.bin_frequencies_hz(MODEL_SAMPLE_RATE).numpy()
    return {
        "frequency_hz": frequencies[::step].round(1).tolist(),
        "before_db": before[::step].round(2).tolist(), "after_db": after[::step].round(2).tolist(),
        "hiss_band_hz": list(render.HISS_BAND_HZ),
        "hiss_before_db": round(render.band_level_db(before), 2),
        "hiss_after_db": round(render.band_level_db(after), 2),
    }


def export(track: Track, denoiser: Denoiser, *, strength_db: float, format: str) -> Path:
    """Denoise the upload exactly as ``cassette-denoise denoise`` does with the same settings; returns the file.

    ``format`` is ``"original"`` (the input's format and subtype) or a key of :data:`EXPORT_FORMATS`
    (keeping the input's subtype where that format can hold it).
    """
    info = track.info
    if format == "original":
        container = info.format
    elif format in EXPORT_FORMATS:
        container = EXPORT_FORMATS[format]
    else:
        raise ValueError(f"format must be original or one of {sorted(EXPORT_FORMATS)}, got {format!r}")
    subtype = info.subtype if sf.check_format(container, info.subtype) else None
    destination = track.folder / f"export-{uuid.uuid4().hex}{SUFFIXES[container]}"
    denoiser.denoise_file(track.input_path, destination, strength_db=strength_db, subtype=subtype)
    return destination


class Workspace:
    """The private folder, the uploads in it and the worker pools.

    ``denoiser`` must have its hum stage on; downloads without it use a twin that shares its model.
    """

    def __init__(self, denoiser: Denoiser, *, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not denoiser.remove_hum:
            raise ValueError("the server's denoiser must have its hum stage on (the page switches it)")
        self.denoisers = {True: denoiser, False: Denoiser(denoiser.model, device=str(denoiser.device),
                                                          metadata=denoiser.metadata, remove_hum=False)}
        # mkdtemp makes the folder readable by this user only.
        self.root = Path(tempfile.mkdtemp(prefix="cassette-denoise-serve-"))
        self.denoise_pool = ThreadPoolExecutor(workers, thread_name_prefix="denoise")
        self.render_pool = ThreadPoolExecutor(1, thread_name_prefix="render")
        self.preview_pool = ThreadPoolExecutor(1, thread_name_prefix="preview")
        self._files: dict[str, Track] = {}
        self._lock = threading.Lock()

    def new_file(self, name: str) -> Track:
        """A track with an empty folder; the caller writes the upload to its ``input_path``."""
        file_id = uuid.uuid4().hex
        folder = self.root / file_id
        folder.mkdir()
        suffix = Path(name).suffix.lower()
        track = Track(file_id, name, folder, suffix if suffix in AUDIO_SUFFIXES else "")
        with self._lock:
            self._files[file_id] = track
        return track

    def get(self, file_id: str) -> Track:
        """Raises ``KeyError`` for an unknown id."""
        with self._lock:
            return self._files[file_id]

    def discard(self, track: Track) -> None:
        with self._lock:
            self._files.pop(track.id, None)
        shutil.rmtree(track.folder, ignore_errors=True)

    def render_job(self, track: Track, *, start_s: float, end_s: float, **settings) -> tuple:
        """The pool and the job that renders ``[start_s, end_s)``: a preview, or a whole-file render that
        stands down (raising :class:`Superseded`) if another was asked for before it started."""
        if end_s - start_s <= PREVIEW_MAX_S:
            return self.preview_pool, lambda: render_range(track, start_s=start_s, end_s=end_s, **settings)
        track.render_ticket += 1
        ticket = track.render_ticket

        def job() -> np.ndarray:
            if ticket != track.render_ticket:
                raise Superseded(f"{track.name}: a newer render was asked for")
            return render_range(track, start_s=start_s, end_s=end_s, **settings)

        return self.render_pool, job

    def start_analysis(self, track: Track) -> Future:
        """Queue the file's one network pass; its outcome lands in ``track.state``."""
        def job() -> None:
            track.state = "running"
            try:
                analyse(track, self.denoisers[True])
            except (AudioError, ValueError, OSError) as error:
                track.state, track.error = "error", track.user_message(error)
                log.info("%s: %s", track.name, track.error)
                return
            except Exception as error:  # the server keeps serving whatever one file does
                track.state, track.error = "error", f"{track.name}: internal error ({error})"
                log.exception("%s: analysis failed", track.name)
                return
            track.progress, track.state = 1.0, "done"

        return self.denoise_pool.submit(job)

    def close(self) -> None:
        """Stop the workers and remove every upload and output."""
        self.denoise_pool.shutdown(wait=True, cancel_futures=True)
        self.render_pool.shutdown(wait=True, cancel_futures=True)
        self.preview_pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)
