"""What the mask model sees of a signal before the mask: the front of the denoiser's signal path.

A signal is resampled to the model rate (44.1 kHz) and goes through the hum stage
(:mod:`cassette_denoise.hum`) and the whine stage (:mod:`cassette_denoise.whine`) before the STFT. :class:`ModelFront` is that front for the stream, and
a clip of the tape's noise alone (a lead-in, a pause, a separate recording) goes through the very
same front in :func:`measure_noise_floor`, so the noise floor measured on it is in exactly the
units, framing and line treatment of the frames the model masks. A model with a noise-floor input
(``UNetConfig.noise_floor_input``) takes that floor instead of estimating one around each tile: the
estimate over dense music sees the music as well as the noise.
"""

from __future__ import annotations

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, AudioError, Resampler, output_length, probe, read_excerpt
from cassette_denoise.hum import HumRemover
from cassette_denoise.whine import WhineRemover
from cassette_denoise.validate import check_noise_clip


class ModelFront:
    """Resample to the model rate, then the hum and whine stages (each if on), in blocks of any size.

    ``process(block)`` takes float32 ``(channels, n)`` at ``sample_rate`` and returns what is final at
    the model rate, ``(channels, m)``; ``finish()`` returns the rest, so that the whole has exactly
    the resampled length.
    """

    def __init__(self, *, channels: int, sample_rate: int, remove_hum: bool, remove_whine: bool = True):
        self.sample_rate = sample_rate
        self._to_model = Resampler(sample_rate, MODEL_SAMPLE_RATE, channels)
        self._hum = HumRemover(channels=channels, sample_rate=MODEL_SAMPLE_RATE) if remove_hum else None
        self._whine = WhineRemover(channels=channels, sample_rate=MODEL_SAMPLE_RATE) if remove_whine else None
        self._samples_in = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        self._samples_in += block.shape[1]
        return self._dewhine(self._dehum(self._to_model.process(block)))

    def finish(self) -> np.ndarray:
        model_rate_total = output_length(self._samples_in, self.sample_rate, MODEL_SAMPLE_RATE)
        tail = self._dehum(self._to_model.flush(total_out=model_rate_total))
        if self._hum is not None:
            tail = np.concatenate([tail, self._hum.finish()], axis=1)
        tail = self._dewhine(tail)
        if self._whine is not None:
            tail = np.concatenate([tail, self._whine.finish()], axis=1)
        return tail

    @property
    def hum_hz(self) -> float | None:
        """The hum fundamental the hum stage has taken out (see :attr:`HumRemover.found_hz`)."""
        return None if self._hum is None else self._hum.found_hz

    @property
    def whine_hz(self) -> list[float]:
        """The whine lines the whine stage has taken out (see :attr:`WhineRemover.found_hz`)."""
        return [] if self._whine is None else list(self._whine.found_hz)

    def _dehum(self, block: np.ndarray) -> np.ndarray:
        return block if self._hum is None else self._hum.process(block)

    def _dewhine(self, block: np.ndarray) -> np.ndarray:
        return block if self._whine is None else self._whine.process(block)


def measure_noise_floor(audio: np.ndarray, sample_rate: int, *, remove_hum: bool,
                        remove_whine: bool = True) -> torch.Tensor:
    """Each bin's noise floor of a clip of noise alone, ``(channels, BINS)`` in feature units.

    ``audio`` ``(channels, samples)`` or ``(samples,)`` goes through :class:`ModelFront`, is framed as
    the stream frames a file (:func:`spectral.pad_signal`) and each channel's floor is
    :func:`spectral.noise_floor` of its spectra.

    Raises:
        TypeError/ValueError: as :func:`cassette_denoise.validate.check_noise_clip`: not audio, shorter
            than ``MIN_NOISE_CLIP_S``, digital silence, non-finite samples.
    """
    clip = check_noise_clip(audio, sample_rate)
    front = ModelFront(channels=clip.shape[0], sample_rate=int(sample_rate), remove_hum=remove_hum,
                       remove_whine=remove_whine)
    model_audio = torch.from_numpy(np.concatenate([front.process(clip), front.finish()], axis=1))
    return spectral.noise_floor(spectral.stft(spectral.pad_signal(model_audio)).abs())


def passage_noise_floor(path, *, start_s: float, end_s: float, remove_hum: bool, remove_whine: bool = True,
                        what: str = "") -> torch.Tensor:
    """:func:`measure_noise_floor` of the passage from ``start_s`` to ``end_s`` of the file at ``path`` (read
    with a seek, so a lead-in costs the same in a long file), ``(channels, BINS)``. ``what`` names the
    passage in errors (default: its times).

    Raises:
        AudioError: the file cannot be read, the passage ends after it, or it is no usable noise clip; the
            message names the file.
    """
    info = probe(path)
    what = what or f"the noise passage {start_s:g}-{end_s:g} s"
    first = round(start_s * info.sample_rate)
    frames = round(end_s * info.sample_rate) - first
    if first + frames > info.frames:
        raise AudioError(f"{path}: {what}: the passage ends after the file, which is {info.duration_s:.3f} s long")
    try:
        return measure_noise_floor(read_excerpt(path, start_frame=first, frames=frames), info.sample_rate,
                                   remove_hum=remove_hum, remove_whine=remove_whine)
    except ValueError as error:
        raise AudioError(f"{path}: {what}: {error}") from None


def check_noise_floor(noise_floor: object, *, channels: int, noise_floor_input: bool) -> torch.Tensor:
    """A given noise floor for ``channels`` channels of audio, as float32 ``(channels, BINS)``.

    ``noise_floor`` is ``(channels, BINS)``, or ``(1, BINS)`` or ``(BINS,)`` for every channel, a tensor
    or array in feature units (:func:`spectral.to_features`); ``noise_floor_input`` is whether the
    model has an input for it.

    Raises:
        ValueError: a model without a noise-floor input, another shape or channel count, or values
            that are not finite or outside ``[-1, 1]``.
    """
    if not noise_floor_input:
        raise ValueError("this model has no noise-floor input (its noise_floor_input is False), so it cannot use "
                         "a given noise floor")
    floor = torch.as_tensor(noise_floor).detach().to("cpu", torch.float32)
    floor = floor.unsqueeze(0) if floor.ndim == 1 else floor
    if floor.ndim != 2 or floor.shape[-1] != spectral.BINS:
        raise ValueError(f"a noise floor must be (channels, {spectral.BINS}) or ({spectral.BINS},), "
                         f"got shape {tuple(np.shape(noise_floor))}")
    if floor.shape[0] not in (1, channels):
        raise ValueError(f"the noise floor has {floor.shape[0]} channels and the audio {channels}; a noise clip "
                         f"needs the audio's channel count, or one channel for all")
    wrong = ~(torch.isfinite(floor) & (floor.abs() <= 1))
    if wrong.any():
        raise ValueError(f"a noise floor holds {floor[wrong][0].item()}; it must be finite and in feature units, "
                         f"[-1, 1] (Denoiser.noise_floor measures one)")
    return floor.expand(channels, -1).contiguous()
