"""Checks on audio handed to the package from outside: arrays, sample rates, channel counts.

One place decides what the Python API, the streaming interface and every command accept, so they
can never disagree. Light on purpose (numpy only): a web front end or a cluster worker can check a
request before it loads a model.

What is accepted, and why:

- **Shape**: ``(channels, samples)``, the package's layout everywhere, or ``(samples,)`` for mono.
  soundfile and most readers return ``(samples, channels)``; such an array (more rows than
  columns, and more rows than :data:`MAX_CHANNELS`) is refused with a message saying to pass
  ``audio.T``, because guessing the layout silently is how a stereo clip becomes 88,200
  "channels".
- **Channels**: 1 to :data:`MAX_CHANNELS` (7.1 surround is the most a tape transfer carries).
- **Sample type**: floating point (full scale ±1), or integer PCM as soundfile and
  ``scipy.io.wavfile`` return it, scaled by its full scale: int16 / 32768, int32 / 2**31, int8 / 128,
  uint8 (8-bit WAV, offset binary) (x - 128) / 128. Other types (bool, complex, int64, unsigned
  16/32/64-bit, objects) are refused rather than guessed at.
- **Sample rate**: an integer number of Hz from :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`
  (a float with an integer value, such as 44100.0, counts).
- **Values**: finite and within ±:data:`MAX_ABS_SAMPLE` (+60 dBFS). Float audio may go beyond full
  scale, but a sample a thousand times full scale is a units mistake, and much larger ones overflow
  the spectrum's power in float32.

A **noise clip** (the tape's noise alone, from which the model takes each bin's noise floor) is audio
as above, at least :data:`MIN_NOISE_CLIP_S` long and not digital silence.

Every refusal is a :class:`TypeError` (wrong kind of object) or :class:`ValueError` (right kind,
wrong value) whose message holds the offending value.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from cassette_denoise.defaults import MIN_NOISE_CLIP_S

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
#: Largest sample magnitude accepted (+60 dBFS); see the module docstring.
MAX_ABS_SAMPLE = 1000.0
#: Integer PCM types and the (offset, full scale) that maps them to ±1.
PCM_SCALES = {
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.uint8): (128.0, 2.0**7),
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
}

#: A clip with no sample of this size (half a 24-bit step) is digital silence: it has no floor to measure.
SILENCE_PEAK = 2.0**-24


def check_sample_rate(sample_rate: object) -> int:
    """The sample rate as an ``int``.

    Raises:
        TypeError: not a real number (a bool counts as not a number).
        ValueError: not a whole number of Hz, or outside ``MIN_SAMPLE_RATE``-``MAX_SAMPLE_RATE``.
    """
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, numbers.Real):
        raise TypeError(f"sample_rate must be a whole number of Hz, got {sample_rate!r} ({type(sample_rate).__name__})")
    if not math.isfinite(sample_rate) or sample_rate != int(sample_rate):
        raise ValueError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return rate


def check_channels(channels: object) -> int:
    """A channel count as an ``int``.

    Raises:
        TypeError: not an integer.
        ValueError: outside 1-``MAX_CHANNELS``.
    """
    if isinstance(channels, (bool, np.bool_)) or not isinstance(channels, numbers.Integral):
        raise TypeError(f"channels must be an integer, got {channels!r} ({type(channels).__name__})")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"{channels} channels; 1-{MAX_CHANNELS} are supported")
    return int(channels)


def check_audio_array(audio: object, sample_rate: object, *, channels: int | None = None) -> np.ndarray:
    """Check audio from a caller and return it as a new float32 ``(channels, samples)`` array.

    ``audio`` is ``(channels, samples)`` or ``(samples,)``; ``channels``, when given, is the count
    it must have (a stream's). The input is never modified and the result never shares its memory.

    Raises:
        TypeError: not an array of a supported sample type.
        ValueError: a bad shape, channel count, sample rate, or a sample that is not finite or
            beyond ±``MAX_ABS_SAMPLE``.
    """
    check_sample_rate(sample_rate)
    array = _as_array(audio)
    if array.ndim == 1:
        array = array[np.newaxis]
    elif array.ndim != 2:
        raise ValueError(f"audio must be (channels, samples) or (samples,), got shape {array.shape}")
    rows, columns = array.shape
    if rows > MAX_CHANNELS and columns < rows:
        raise ValueError(f"audio of shape {array.shape} looks like (samples, channels), the layout soundfile returns; "
                         f"pass audio.T to get (channels, samples)")
    check_channels(rows)
    if channels is not None and rows != channels:
        raise ValueError(f"audio has {rows} channels, expected {channels}")
    if columns == 0:
        raise ValueError(f"audio has no samples (shape {array.shape})")
    if array.dtype.kind == "f":
        _check_values(array)
    return _to_float32(array)


def check_noise_clip(audio: object, sample_rate: object) -> np.ndarray:
    """Check a clip of the tape's noise alone and return it as a new float32 ``(channels, samples)`` array.

    Raises:
        TypeError: as :func:`check_audio_array`.
        ValueError: as :func:`check_audio_array` (non-finite samples included), or shorter than
            :data:`MIN_NOISE_CLIP_S`, or digital silence (no sample reaches :data:`SILENCE_PEAK`).
    """
    clip = check_audio_array(audio, sample_rate)
    rate = check_sample_rate(sample_rate)
    if clip.shape[1] < MIN_NOISE_CLIP_S * rate:
        raise ValueError(f"the noise clip is {clip.shape[1] / rate:.3g} s long ({clip.shape[1]} samples at {rate} Hz); "
                         f"a noise floor needs at least {MIN_NOISE_CLIP_S:g} s")
    peak = float(np.abs(clip).max())
    if peak < SILENCE_PEAK:
        raise ValueError(f"the noise clip is digital silence (peak {peak:g}); it has no noise floor to measure")
    return clip


def _as_array(audio: object) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        array = audio
    elif hasattr(audio, "__array__") or isinstance(audio, (list, tuple)):
        try:
            array = np.asarray(audio)
        except (TypeError, ValueError) as error:
            raise TypeError(f"audio must be a numeric array, got {type(audio).__name__} ({error})") from None
    else:
        raise TypeError(f"audio must be a numpy array (channels, samples), got {type(audio).__name__}")
    if array.ndim == 0:
        raise ValueError(f"audio must be (channels, samples) or (samples,), got a scalar {array!r}")
    if array.dtype.kind == "f" or array.dtype in PCM_SCALES:
        return array
    raise TypeError(f"audio samples must be float or int8/uint8/int16/int32 PCM, got dtype {array.dtype}")


def _to_float32(array: np.ndarray) -> np.ndarray:
    if array.dtype in PCM_SCALES:
        offset, scale = PCM_SCALES[array.dtype]
        return ((array.astype(np.float64) - offset) / scale).astype(np.float32)
    return np.array(array, dtype=np.float32, copy=True, order="C")


def _check_values(audio: np.ndarray) -> None:
    """Float ``(channels, samples)``: finite and within ±MAX_ABS_SAMPLE, checked before any cast to float32."""
    finite = np.isfinite(audio)
    if not finite.all():
        channel, sample = np.argwhere(~finite)[0]
        raise ValueError(f"audio has a non-finite sample ({audio[channel, sample]}) at channel {channel}, "
                         f"sample {sample}")
    peak = float(np.abs(audio).max())
    if peak > MAX_ABS_SAMPLE:
        channel, sample = np.unravel_index(int(np.abs(audio).argmax()), audio.shape)
        raise ValueError(f"audio has a sample of {audio[channel, sample]:g} at channel {channel}, sample {sample}; "
                         f"samples beyond ±{MAX_ABS_SAMPLE:g} (+60 dBFS) are refused (float audio is ±1 full scale)")
