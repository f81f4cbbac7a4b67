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

from cassette_denoise.validate import MAX_ABS_SAMPLE, MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

MODEL_SAMPLE_RATE = 44_100
PARTIAL_SUFFIX = ".partial"
#: Bytes of an output's name kept in its temporary file's name (see :func:`partial_prefix`).
PARTIAL_NAME_BYTES = 120
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
    if not path.is_file():
        # A FIFO or device would block the reader or never end.
        raise AudioError(f"{path}: not a regular file")
    try:
        with _mpeg_decoder_messages(path.suffix.lower() == ".mp3"):  # its seeking warnings name no file
            info = sf.info(os.fsencode(path), verbose=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_short(error)})") from None
    if info.format == "RAW":
        # libsndfile reads any .au without a header as 8 kHz µ-law, so random bytes would pass as audio.
        raise AudioError(f"{path}: not a readable audio file (no header)")
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
        AudioError: on a truncated/corrupt stream (fewer frames than the header declares), on NaN,
            infinite or huge samples, or when the file turns out to hold no frames at all.
    """
    total, mpeg = 0, info.format == "MP3"
    try:
        with _mpeg_decoder_messages(mpeg):
            handle = sf.SoundFile(os.fsencode(info.path))
        with handle:
            while True:
                with _mpeg_decoder_messages(mpeg) as messages:
                    block = handle.read(block_frames, dtype="float32", always_2d=True)
                if errors := [line for line in messages if "error:" in line]:
                    reason = errors[0].split("error:", 1)[1].strip()
                    raise AudioError(f"{info.path}: corrupt MP3 data near {total / info.sample_rate:.2f} s ({reason})")
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    raise AudioError(f"{info.path}: contains NaN or infinite samples near {total / info.sample_rate:.2f} s")
                if (peak := float(np.abs(block).max())) > MAX_ABS_SAMPLE:
                    raise AudioError(f"{info.path}: a sample of {peak:g} near {total / info.sample_rate:.2f} s is beyond "
                                     f"±{MAX_ABS_SAMPLE:g} (+60 dBFS)")
                total += block.shape[0]
                yield np.ascontiguousarray(block.T)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{info.path}: corrupt or truncated audio ({_short(error)})") from None
    if total == 0:
        raise AudioError(f"{info.path}: no audio frames")
    if total < info.frames:
        raise AudioError(f"{info.path}: truncated or corrupt ({total} of the {info.frames} frames its header declares)")


@contextlib.contextmanager
def _mpeg_decoder_messages(active: bool) -> Iterator[list[str]]:
    """Collect what libmpg123 writes to the process's stderr (file descriptor 2) while active.

    The MP3 decoder reports damaged frames only there, one unattributed line per frame, and goes on
    with garbage; collected, they can become one error naming the file. Kept to single library calls,
    so nothing else's output is caught.
    """
    messages: list[str] = []
    if not active:
        yield messages
        return
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                messages += sink.read(1 << 16).decode("utf-8", "replace").splitlines()
    finally:
        os.close(saved)


def read_excerpt(path: str | os.PathLike, *, start_frame: int, frames: int) -> np.ndarray:
    """Read ``frames`` frames from ``start_frame`` without decoding the rest of the file.

    Returns float32 ``(channels, frames)``, zero-padded if the file ends early.
    """
    try:
        block = sf.read(os.fsencode(path), start=start_frame, frames=frames, dtype="float32", always_2d=True, fill_value=0.0)[0]
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
        self.format = format or format_for_suffix(self.path)
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
                os.fsencode(self._temp_path), "w", samplerate=self.sample_rate, channels=self.channels,
                format=self.format, subtype=self.subtype,
            )
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
            self._discard()
            raise AudioError(f"{self.path}: cannot write {self.format}/{self.subtype} ({_short(error)})") from None
        return self

    def write(self, audio: np.ndarray) -> None:
        """Append float ``(channels, samples)`` audio."""
        assert self._sound_file is not None, "use AtomicAudioWriter as a context manager"
        try:
            self._sound_file.write(np.ascontiguousarray(audio.T))
        except (OSError, sf.LibsndfileError, RuntimeError) as error:
            # Disk full or a file-size limit: libsndfile says only "System error."; name the file and why.
            reason = os.strerror(error.errno) if getattr(error, "errno", None) else _short(error)
            raise AudioError(f"{self.path}: cannot write ({reason}; is the disk full?)") from None

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
    """A new empty hidden file next to ``path`` (``.NAME.PID.XXXX.partial``), for an atomic rename onto it."""
    handle, name = tempfile.mkstemp(prefix=partial_prefix(path, pid=os.getpid()), suffix=PARTIAL_SUFFIX,
                                    dir=path.parent)
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


def partial_prefix(path: Path, *, pid: int) -> str:
    """Start of the temporary file names for output ``path`` written by process ``pid``.

    The output's name is cut to :data:`PARTIAL_NAME_BYTES` so that the temporary name stays within
    the 255 bytes file systems allow however long the output's name is.
    """
    name = os.fsdecode(os.fsencode(path.name)[:PARTIAL_NAME_BYTES])
    return f".{name}.{pid}."


def remove_stale_partials(path: str | os.PathLike) -> int:
    """Delete temporary files that a killed run left for output ``path``; returns how many.

    A temporary file is stale only when the process named in it is gone: another run writing into
    the same folder at the same time (or a batch worker) keeps its own.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    prefix = partial_prefix(path, pid=0)[:-2]  # ".NAME."
    removed = 0
    for leftover in path.parent.glob(glob.escape(prefix) + "*" + PARTIAL_SUFFIX):
        # ".NAME.PID.XXXXXXXX.partial" (mkstemp's 8 random characters); anything else is another output's.
        match = re.fullmatch(r"(\d+)\.[a-z0-9_]{8}", leftover.name[len(prefix): -len(PARTIAL_SUFFIX)])
        if match is None or _process_alive(int(match.group(1))):
            continue
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:
        return False
    return True


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
    return scan_audio_files(folder)[0]


def scan_audio_files(folder: str | os.PathLike, *, exclude: Path | None = None) -> tuple[list[Path], list[str]]:
    """Audio files under ``folder`` and one line per thing that had to be passed over.

    Recursive and sorted; hidden files and folders are skipped quietly, and so is ``exclude`` (an
    output folder inside the input must not be read back as input). Unreadable folders, dangling or
    looping links and non-regular files named like audio (FIFOs, devices) are passed over with a line
    naming them. Symbolic links to folders are not followed.
    """
    folder = Path(folder)
    skip = exclude.resolve() if exclude is not None else None
    files, problems = [], []

    def unreadable(error: OSError) -> None:
        problems.append(f"{error.filename}: cannot read this folder ({error.strerror}); skipped")

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        here = Path(root)
        dirs[:] = sorted(name for name in dirs if not name.startswith(".") and (here / name).resolve() != skip)
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                problems.append(f"{path}: broken or looping link; skipped")
            elif not path.is_dir():
                problems.append(f"{path}: not a regular file; skipped")
    return sorted(files), problems


def _missing_data_bytes(header_log: str) -> int | None:
    """Bytes missing from a file, read from libsndfile's header log; ``None`` if complete.

    libsndfile reads a truncated WAV, AIFF, AU or W64 without complaint, giving only the frames that
    are there; its log says ``<chunk> : <declared> (should be <present>)`` for the data chunk (WAV
    ``data``, AIFF ``SSND``, AU ``Data Size``) or the whole file (W64 ``riff``, WAV ``RIFF``, AIFF
    ``FORM``). Streaming writers leave 0 or 0xFFFFFFFF as the declared size, which is not truncation,
    and a single missing byte is the pad byte some writers leave off an odd-sized chunk.
    """
    missing = None
    for match in re.finditer(r"^\s*(?:data|SSND|Data Size|riff|RIFF|FORM)\s*:\s*(\d+)\s*\(should be (\d+)\)",
                             header_log, re.MULTILINE):
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in (0, 0xFFFFFFFF) and declared > present + 1:
            missing = max(missing or 0, declared - present)
    return missing


#: Sample encodings that mean the same in every container that holds them.
PORTABLE_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"})


def matching_subtype(subtype: str, path: str | os.PathLike) -> str | None:
    """The subtype for writing ``path`` that keeps the input ``subtype``'s resolution.

    The input's own subtype where the output format holds it (24-bit FLAC to WAV stays 24-bit);
    for lossy input (decoded as float), the format's default. ``None`` means
    the format's default.
    """
    output_format = format_for_suffix(Path(path))
    # Only sample formats travel: libsndfile's check_format says WAV can hold MP3 data, but it cannot write it.
    if subtype in PORTABLE_SUBTYPES and sf.check_format(output_format, subtype):
        return subtype
    wider = {"PCM_S8": "PCM_16", "PCM_U8": "PCM_16", "ULAW": "PCM_16", "ALAW": "PCM_16", "IMA_ADPCM": "PCM_16",
             "MS_ADPCM": "PCM_16", "PCM_32": "PCM_24", "FLOAT": "PCM_24", "DOUBLE": "PCM_24"}
    fallback = wider.get(subtype or "")
    return fallback if fallback and sf.check_format(output_format, fallback) else None


def format_for_suffix(path: Path) -> str:
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".mp3": "MP3",
               ".aif": "AIFF", ".aiff": "AIFF", ".au": "AU", ".w64": "W64", ".caf": "CAF"}
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise AudioError(f"{path}: unsupported output format {path.suffix!r} (use one of {sorted(formats)})") from None


def _short(error: Exception) -> str:
    if isinstance(error, sf.LibsndfileError) and error.error_string:
        return error.error_string  # without soundfile's "Error opening b'...'" prefix: callers name the file
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
