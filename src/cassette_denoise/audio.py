"""Audio in and out: reading, atomic writing and resampling.

Everything inside the package works on float32 arrays shaped ``(channels, samples)``; this module
is the one place that converts from and to files (libsndfile via soundfile) and between sample
rates (soxr).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr

MODEL_SAMPLE_RATE = 44_100
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
PARTIAL_SUFFIX = ".partial"
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"})


class AudioError(Exception):
    """A file that cannot be read or written as audio; the message names the file and the reason."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header and check that the package can process it.

    Raises:
        AudioError: missing file, not audio, or outside the supported rates/channels/length.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        info = sf.info(str(path), verbose=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_short(error)})") from None
    if (missing := _missing_data_bytes(info.extra_info)) is not None:
        raise AudioError(f"{path}: truncated file ({missing} bytes of audio data missing)")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {info.samplerate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: {info.channels} channels; 1-{MAX_CHANNELS} are supported")
    if info.frames <= 0:
        raise AudioError(f"{path}: no audio frames")
    return AudioInfo(path, info.samplerate, info.channels, info.frames, info.format, info.subtype)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a whole file.

    Returns:
        ``(audio, sample_rate)`` with audio float32 ``(channels, samples)``.
    """
    info = probe(path)
    blocks = list(iter_blocks(info, block_frames=1 << 20))
    return np.concatenate(blocks, axis=1), info.sample_rate


def read_resampled(path: str | os.PathLike, *, sample_rate: int = MODEL_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """A whole file as float32 ``(channels, samples)`` at ``sample_rate``, and the file's own rate."""
    audio, file_rate = read_audio(path)
    return resample(audio, file_rate, sample_rate), file_rate


def iter_blocks(info: AudioInfo, *, block_frames: int) -> Iterator[np.ndarray]:
    """Yield a file's audio in blocks of float32 ``(channels, block_frames)`` (the last may be shorter).

    Raises:
        AudioError: on a truncated/corrupt stream, on NaN or infinite samples, or when the file
            turns out to hold no frames at all.
    """
    total = 0
    try:
        with sf.SoundFile(str(info.path)) as handle:
            while True:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    raise AudioError(f"{info.path}: contains NaN or infinite samples near {total / info.sample_rate:.2f} s")
                total += block.shape[0]
                yield np.ascontiguousarray(block.T)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{info.path}: corrupt or truncated audio ({_short(error)})") from None
    if total == 0:
        raise AudioError(f"{info.path}: no audio frames")


def read_excerpt(path: str | os.PathLike, *, start_frame: int, frames: int) -> np.ndarray:
    """Read ``frames`` frames from ``start_frame`` without decoding the rest of the file.

    Returns float32 ``(channels, frames)``, zero-padded if the file ends early.
    """
    try:
        block = sf.read(str(path), start=start_frame, frames=frames, dtype="float32", always_2d=True, fill_value=0.0)[0]
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot read an excerpt ({_short(error)})") from None
    return np.ascontiguousarray(block.T)


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, subtype: str | None = None) -> None:
    """Write float ``(channels, samples)`` audio atomically (see :class:`AtomicAudioWriter`)."""
    audio = np.atleast_2d(audio)
    with AtomicAudioWriter(path, sample_rate=sample_rate, channels=audio.shape[0], subtype=subtype) as writer:
        writer.write(audio)


class AtomicAudioWriter:
    """Write an audio file so that it appears whole or not at all.

    The data goes to a hidden temporary file in the target folder (``.NAME.XXXX.partial``), renamed
    over the target only after the last block is written. An exception removes the temporary file;
    a hard kill can leave one behind, which :func:`remove_stale_partials` clears on the next run.
    The target itself is never seen half-written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        sample_rate: int,
        channels: int,
        format: str | None = None,
        subtype: str | None = None,
    ):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format or _format_for_suffix(self.path)
        self.subtype = subtype
        self._sound_file: sf.SoundFile | None = None
        self._temp_path: Path | None = None

    def __enter__(self) -> "AtomicAudioWriter":
        folder = self.path.parent
        if not folder.is_dir():
            raise AudioError(f"{self.path}: output folder {folder} does not exist")
        if self.subtype is not None and not sf.check_format(self.format, self.subtype):
            raise AudioError(f"{self.path}: format {self.format} cannot hold subtype {self.subtype}")
        try:
            self._temp_path = _temporary_beside(self.path)
        except OSError as error:
            raise AudioError(f"{self.path}: output folder {folder} is not writable ({error.strerror})") from None
        try:
            self._sound_file = sf.SoundFile(
                str(self._temp_path), "w", samplerate=self.sample_rate, channels=self.channels,
                format=self.format, subtype=self.subtype,
            )
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            self._discard()
            raise AudioError(f"{self.path}: cannot write {self.format}/{self.subtype} ({_short(error)})") from None
        return self

    def write(self, audio: np.ndarray) -> None:
        """Append float ``(channels, samples)`` audio."""
        assert self._sound_file is not None, "use AtomicAudioWriter as a context manager"
        self._sound_file.write(np.ascontiguousarray(audio.T))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._sound_file.close()
            os.replace(self._temp_path, self.path)
        except (OSError, sf.LibsndfileError, RuntimeError) as error:
            self._discard()
            raise AudioError(f"{self.path}: cannot write ({getattr(error, 'strerror', None) or error})") from None

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            if self._sound_file is not None and not self._sound_file.closed:
                self._sound_file.close()
        if self._temp_path is not None:
            self._temp_path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Make ``path`` appear whole or not at all: ``write(temporary)`` fills a hidden file in the same
    folder, which then replaces ``path`` in one rename. Any file, not only audio (models, manifests)."""
    path = Path(path)
    temporary = _temporary_beside(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _temporary_beside(path: Path) -> Path:
    """A new empty hidden file next to ``path`` (``.NAME.XXXX.partial``), for an atomic rename onto it."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    os.close(handle)
    # mkstemp makes the file private (0600); give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Float ``(channels, samples)`` audio as a 16-bit WAV file in memory (for a browser to play)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.atleast_2d(audio), -1.0, 1.0).T, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def remove_stale_partials(path: str | os.PathLike) -> int:
    """Delete temporary files a killed run left for output ``path``; returns how many."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*{PARTIAL_SUFFIX}"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return len(stale)


class Resampler:
    """Streaming sample-rate conversion with soxr, trimmed to an exact output length.

    Feed blocks of float32 ``(channels, samples)`` with :meth:`process`, then call :meth:`flush`
    with the output length wanted (usually :func:`output_length` of the input); the concatenated
    output is padded or trimmed to exactly that, so a round trip keeps a file's length.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int):
        self.rate_in, self.rate_out, self.channels = rate_in, rate_out, channels
        self._stream = None if rate_in == rate_out else soxr.ResampleStream(
            rate_in, rate_out, channels, dtype="float32", quality="HQ"
        )
        self._emitted = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample one block ``(channels, n)``; returns ``(channels, m)`` (m may be 0)."""
        if self._stream is None:
            out = block
        else:
            out = self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32)).T
        self._emitted += out.shape[1]
        return np.ascontiguousarray(out, dtype=np.float32)

    def flush(self, *, total_out: int) -> np.ndarray:
        """Drain the filter and pad/trim so the whole output is exactly ``total_out`` samples long."""
        expected = total_out
        if self._stream is None:
            tail = np.zeros((self.channels, 0), np.float32)
        else:
            tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True).T
        room = expected - self._emitted
        if room < 0:
            raise RuntimeError(f"resampler emitted {self._emitted} samples, more than the {expected} expected")
        tail = tail[:, :room]
        if tail.shape[1] < room:
            tail = np.pad(tail, ((0, 0), (0, room - tail.shape[1])))
        self._emitted += tail.shape[1]
        return np.ascontiguousarray(tail, dtype=np.float32)


def output_length(samples_in: int, rate_in: int, rate_out: int) -> int:
    """Length after resampling ``samples_in`` samples from ``rate_in`` to ``rate_out`` Hz."""
    return int(round(samples_in * rate_out / rate_in))


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample float ``(channels, samples)`` audio with the package's one resampler."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    resampler = Resampler(rate_in, rate_out, audio.shape[0])
    head = resampler.process(audio)
    tail = resampler.flush(total_out=output_length(audio.shape[1], rate_in, rate_out))
    return np.concatenate([head, tail], axis=1)


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """All audio files under ``folder`` (recursive, sorted, hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _missing_data_bytes(header_log: str) -> int | None:
    """Bytes missing from a data chunk, read from libsndfile's header log; ``None`` if complete.

    libsndfile reads a truncated WAV/AIFF without complaint, giving only the frames that are there;
    its log says ``data : <declared> (should be <present>)``. Streaming writers leave 0 or 0xFFFFFFFF
    as the declared size, which is not truncation.
    """
    match = re.search(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", header_log, re.MULTILINE)
    if not match:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in (0, 0xFFFFFFFF) or declared <= present:
        return None
    return declared - present


def _format_for_suffix(path: Path) -> str:
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
               ".aif": "AIFF", ".aiff": "AIFF", ".au": "AU", ".w64": "W64", ".caf": "CAF"}
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise AudioError(f"{path}: unsupported output format {path.suffix!r} (use one of {sorted(formats)})") from None


def _short(error: Exception) -> str:
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
