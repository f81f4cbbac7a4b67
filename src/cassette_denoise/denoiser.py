"""Denoise arrays and files with a trained mask model, streaming in blocks.

The signal path (the seed's, with its flaws fixed):

1. resample to 44.1 kHz (soxr) if needed, and subtract hum (45–65 Hz and harmonics) that holds over several seconds
   (:mod:`cassette_denoise.hum`; a 43 Hz bin cannot take it out without the bass);
2. STFT (512 bins, hop 512), magnitude → dB against a fixed full-scale reference → ``[-1, 1]``;
3. tiles of 512 frames overlapping by :data:`~cassette_denoise.tiles.TILE_OVERLAP_FRAMES`; the model predicts a 0-1 mask per tile;
   overlapping masks are cross-faded with weights that sum to one, so there are no seams;
4. the mask is raised to the model's calibrated exponent (a treble exponent of its own from
   TREBLE_RAMP_HZ up), floored at ``-strength_db`` dB and multiplied with the noisy spectrum
   (noisy phase kept);
5. inverse STFT by weighted overlap-add; resample back; exactly the input's length.

The model's noise-floor input is estimated around each tile (the tile and
:data:`~cassette_denoise.tiles.NOISE_FLOOR_CONTEXT_FRAMES` either side) unless a caller gives one measured on the
tape's noise alone (:meth:`Denoiser.noise_floor`, through the same front: :mod:`cassette_denoise.front`)
or the model carries one (a model ``cassette-denoise adapt`` wrote carries its blank tape's).

Everything runs through :class:`DenoiseStream`, which takes any block sizes and holds only a few
tiles of state, so memory stays flat however long the file is. Denoising a whole array is the same
stream fed in one block, so streaming and whole-file results are identical.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import (
    MODEL_SAMPLE_RATE, AtomicAudioWriter, AudioError, Resampler, iter_blocks, matching_subtype, probe,
)
from cassette_denoise.checkpoint import load_model
from cassette_denoise.defaults import DEFAULT_STRENGTH_DB
from cassette_denoise.front import ModelFront, check_noise_floor, measure_noise_floor
from cassette_denoise.model import UNet
from cassette_denoise.precision import resolve_precision
from cassette_denoise.tiles import TILE_FRAMES, MaskStream, MaskTap
from cassette_denoise.validate import check_audio_array, check_channels, check_sample_rate

log = logging.getLogger(__name__)

#: The hum and whine stages (see :mod:`cassette_denoise.hum`, :mod:`cassette_denoise.whine`) are on unless a
#: caller switches them off.
REMOVE_HUM = True
REMOVE_WHINE = True
BUNDLED_MODEL = "cassette-unet-w8-treble-stronger"
#: The mask exponent is the calibrated ``mask_exponent`` up to the first frequency and the calibrated
#: ``treble_mask_exponent`` from the second up, linear in between (docs/MODEL_CARD.md, "Calibration"):
#: SI-SDR hardly sees the treble, so the treble's exponent is calibrated on the log-spectral distance.
TREBLE_RAMP_HZ = (4000.0, 8000.0)
#: Samples read per block when streaming a file: about 3 s at 44.1 kHz.
BLOCK_FRAMES = 1 << 17
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE", "VORBIS", "OPUS"})


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Denoiser.denoise_file` did."""

    source: Path
    destination: Path
    duration_s: float
    seconds: float
    peak_dbfs: float
    #: Samples beyond full scale that had to be clipped to fit an integer output format.
    clipped_samples: int
    #: The hum fundamental the hum stage took out, Hz to 0.1 Hz (``None``: none, or the stage was off).
    hum_hz: float | None = None
    #: The whine lines the whine stage took out, Hz (empty: none, or the stage was off).
    whine_hz: tuple[float, ...] = ()


class Denoiser:
    """A mask model plus the signal path around it.

    Audio arrays are ``(channels, samples)`` (a 1-D array is one channel) at any whole rate from
    8 to 192 kHz, float at ±1 full scale or integer PCM; :mod:`cassette_denoise.validate` says
    exactly what is accepted. A soundfile array is ``(samples, channels)``: pass its ``.T``.
    Each channel gets its own mask.
    """

    def __init__(self, model: UNet, *, device: str = "auto", metadata: dict | None = None,
                 mask_exponent: float | None = None, treble_mask_exponent: float | None = None,
                 remove_hum: bool = REMOVE_HUM, remove_whine: bool = REMOVE_WHINE, precision: str = "auto"):
        """``mask_exponent`` defaults to the one calibrated for this model (its sidecar's
        ``calibration.mask_exponent``; 1, the raw mask, for a model without one), and
        ``treble_mask_exponent`` (from :data:`TREBLE_RAMP_HZ` up) to the sidecar's
        ``calibration.treble_mask_exponent``, else to ``mask_exponent``. ``remove_hum`` and
        ``remove_whine`` switch the hum and whine stages before the model. ``precision`` (:mod:`cassette_denoise.precision`) sets the
        arithmetic of the model's convolutions (:attr:`compute_dtype`); the mask is computed in float32."""
        self.remove_hum, self.remove_whine = remove_hum, remove_whine
        self.device = resolve_device(device)
        self.compute_dtype = resolve_precision(precision, self.device)
        # channels_last halves CPU inference time for this narrow network (oneDNN's fast path).
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.metadata = metadata or {}
        calibration = self.metadata.get("calibration", {})
        if mask_exponent is None:
            mask_exponent = calibration.get("mask_exponent", 1.0)
        if treble_mask_exponent is None:
            treble_mask_exponent = calibration.get("treble_mask_exponent", mask_exponent)
        for name, value in (("mask_exponent", mask_exponent), ("treble_mask_exponent", treble_mask_exponent)):
            if not 0.25 <= value <= 8:
                raise ValueError(f"{name} must be between 0.25 and 8, got {value}")
        self.mask_exponent = float(mask_exponent)
        self.treble_mask_exponent = float(treble_mask_exponent)
        if TILE_FRAMES % model.config.frame_multiple:
            raise ValueError(f"tile of {TILE_FRAMES} frames does not fit a {model.config.levels}-level U-Net")
        # A model adapted to one deck learnt with the floor of that deck's noise given, not estimated on
        # each tile of music, and carries the floor of its blank tape (sidecar ``noise_floor``, ``(BINS,)``).
        carried = self.metadata.get("noise_floor")
        self.carried_noise_floor = None if carried is None else check_noise_floor(
            carried, channels=1, noise_floor_input=model.config.noise_floor_input)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **options) -> "Denoiser":
        """The model bundled inside the package (no download), or the checkpoint at ``path`` (a model
        that ``cassette-denoise adapt`` or ``train`` wrote); ``options`` as for the constructor."""
        if path is not None:
            return cls.from_checkpoint(path, **options)
        weights = resources.files("cassette_denoise") / "weights" / f"{BUNDLED_MODEL}.safetensors"
        with resources.as_file(weights) as bundled:
            return cls.from_checkpoint(bundled, **options)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options) -> "Denoiser":
        """A user's or a training run's ``.safetensors`` file (with its JSON sidecar); ``options`` as
        for the constructor."""
        model, metadata = load_model(path)
        return cls(model, metadata=metadata, **options)

    def noise_floor(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Each bin's noise floor measured on a clip of the tape's noise alone, ``(channels, BINS)``, for
        the ``noise_floor`` option of :meth:`denoise`, :meth:`denoise_file` and :meth:`stream`.

        ``audio`` ``(channels, samples)`` or ``(samples,)`` at ``sample_rate``: see
        :func:`cassette_denoise.front.measure_noise_floor`, which also says what it raises. A mono
        clip's floor serves audio of any channel count.
        """
        return measure_noise_floor(audio, sample_rate, remove_hum=self.remove_hum, remove_whine=self.remove_whine)

    def stream(self, *, channels: int, sample_rate: int, strength_db: float = DEFAULT_STRENGTH_DB,
               tap: MaskTap | None = None, noise_floor: torch.Tensor | None = None) -> "DenoiseStream":
        """A :class:`DenoiseStream`; without ``noise_floor``, the floor the model carries (:attr:`carried_noise_floor`,
        an adapted model's blank tape's) if any, else the floor estimated around each tile."""
        if noise_floor is None:
            noise_floor = self.carried_noise_floor
        return DenoiseStream(self, channels=channels, sample_rate=sample_rate, strength_db=strength_db, tap=tap,
                             noise_floor=noise_floor)

    def denoise(self, audio: np.ndarray, sample_rate: int, *, strength_db: float = DEFAULT_STRENGTH_DB,
                noise_floor: torch.Tensor | None = None) -> np.ndarray:
        """Denoise a whole array ``(channels, samples)`` or ``(samples,)``; returns float32 of the same shape.

        The input is checked by :func:`cassette_denoise.validate.check_audio_array` and never modified.
        ``noise_floor`` (:meth:`noise_floor`'s) replaces the floor the model carries or estimates around each tile.

        Raises:
            TypeError: not an array of float or int8/uint8/int16/int32 PCM samples, or a sample rate
                that is not a number.
            ValueError: a bad shape (including ``(samples, channels)``: pass ``audio.T``), 0 or more
                than 8 channels, no samples, a rate outside 8-192 kHz, non-finite samples or samples
                beyond ±1000, ``strength_db`` outside 0-120, or a ``noise_floor`` that does not fit
                (:func:`cassette_denoise.front.check_noise_floor`).
        """
        mono = np.ndim(audio) == 1
        audio = check_audio_array(audio, sample_rate)
        stream = self.stream(channels=audio.shape[0], sample_rate=sample_rate, strength_db=strength_db,
                             noise_floor=noise_floor)
        # Fed in blocks so that a long array costs no more working memory than a file does.
        pieces = [stream.process(audio[:, start: start + BLOCK_FRAMES]) for start in range(0, audio.shape[1], BLOCK_FRAMES)]
        out = np.concatenate([*pieces, stream.finish()], axis=1)
        _check_finite_output(out, what="the denoised array")
        return out[0] if mono else out

    def denoise_file(
        self,
        source: str | Path,
        destination: str | Path,
        *,
        strength_db: float = DEFAULT_STRENGTH_DB,
        subtype: str | None = None,
        progress: Callable[[int], None] | None = None,
        noise_floor: torch.Tensor | None = None,
    ) -> FileResult:
        """Denoise ``source`` into ``destination`` block by block.

        The output keeps the input's rate and channel count; its format follows ``destination``'s
        suffix and its subtype is the input's (where that format can hold it, see
        :func:`~cassette_denoise.audio.matching_subtype`) unless ``subtype`` is given. Samples beyond full
        scale are clipped only where the output format cannot hold them, and counted in the result.
        ``progress`` is called with the number of input frames just consumed. ``noise_floor`` as for
        :meth:`denoise`.

        Raises:
            AudioError: unreadable input, unwritable output, or ``destination`` equal to ``source``.
            ValueError: a ``noise_floor`` that does not fit; nothing is written.
        """
        source, destination = Path(source), Path(destination)
        if destination.exists() and destination.resolve() == source.resolve():
            raise AudioError(f"{source}: output would overwrite the input")
        info = probe(source)
        subtype = subtype or matching_subtype(info.subtype, destination)
        keep_overs = (subtype or "").upper() in FLOAT_SUBTYPES
        started = time.perf_counter()
        stream = self.stream(channels=info.channels, sample_rate=info.sample_rate, strength_db=strength_db,
                             noise_floor=noise_floor)
        peak, clipped = 0.0, 0

        with AtomicAudioWriter(destination, sample_rate=info.sample_rate, channels=info.channels, subtype=subtype) as writer:
            def emit(block: np.ndarray) -> None:
                nonlocal peak, clipped
                if block.shape[1] == 0:
                    return
                if not np.isfinite(block).all():
                    raise AudioError(f"{source}: denoising gave non-finite samples; nothing written (please report)")
                peak = max(peak, float(np.abs(block).max()))
                if not keep_overs:
                    overs = np.abs(block) > 1.0
                    if overs.any():
                        clipped += int(overs.sum())
                        block = np.clip(block, -1.0, 1.0)
                writer.write(block)

            for block in iter_blocks(info, block_frames=BLOCK_FRAMES):
                emit(stream.process(block))
                if progress:
                    progress(block.shape[1])
            emit(stream.finish())
        if clipped:
            # Info, not a warning: the count is in the result, and a command reports it in its own words.
            log.info("%s: %d samples above full scale (peak %+.2f dBFS) were clipped", destination, clipped, _dbfs(peak))
        return FileResult(
            source, destination, info.duration_s, time.perf_counter() - started, _dbfs(peak), clipped, stream.hum_hz,
            tuple(stream.whine_hz),
        )


class DenoiseStream:
    """Denoise one signal fed in blocks of any size.

    ``process(block)`` takes float ``(channels, n)`` and returns the output that is already final,
    ``(channels, m)``; ``finish()`` returns the rest. Output is delayed by up to about one tile
    (≈ 6 s), the automatic noise floor's look-ahead (≈ 6 s, none with a given floor) and the hum
    stage's 9 s but, concatenated, has exactly the input's length.

    ``noise_floor`` (see :meth:`Denoiser.noise_floor`; checked by
    :func:`cassette_denoise.front.check_noise_floor`) is the model's noise-floor input for every tile
    instead of the floor estimated around each tile; it changes only what the model sees.
    """

    def __init__(self, denoiser: Denoiser, *, channels: int, sample_rate: int, strength_db: float,
                 tap: MaskTap | None = None, noise_floor: torch.Tensor | None = None):
        channels, sample_rate = check_channels(channels), check_sample_rate(sample_rate)
        if not 0 <= strength_db <= 120:
            raise ValueError(f"strength_db must be between 0 and 120 dB, got {strength_db}")
        if noise_floor is not None:
            noise_floor = check_noise_floor(noise_floor, channels=channels,
                                            noise_floor_input=denoiser.model.config.noise_floor_input)
        self.channels, self.sample_rate = channels, sample_rate
        self._front = ModelFront(channels=channels, sample_rate=sample_rate, remove_hum=denoiser.remove_hum,
                                 remove_whine=denoiser.remove_whine)
        self._from_model = Resampler(MODEL_SAMPLE_RATE, sample_rate, channels)
        self._core = MaskStream(denoiser.model, device=denoiser.device, compute_dtype=denoiser.compute_dtype,
                                 channels=channels,
                                 mask_exponent=mask_exponents(denoiser.mask_exponent, denoiser.treble_mask_exponent),
                                 mask_floor=10 ** (-strength_db / 20), tap=tap, noise_floor=noise_floor)
        self._samples_in = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Raises TypeError/ValueError as :func:`cassette_denoise.validate.check_audio_array` (an empty block is fine)."""
        if np.shape(block)[-1:] == (0,):
            return np.zeros((self.channels, 0), np.float32)
        block = check_audio_array(block, self.sample_rate, channels=self.channels)
        self._samples_in += block.shape[1]
        return self._from_model.process(self._masked(self._front.process(block)))

    def finish(self) -> np.ndarray:
        tail = self._front.finish()
        tail = np.concatenate([self._masked(tail), self._core.finish()], axis=1)
        head = self._from_model.process(tail)
        return np.concatenate([head, self._from_model.flush(total_out=self._samples_in)], axis=1)

    def _masked(self, model_audio: np.ndarray) -> np.ndarray:
        """The mask stream's output for ``model_audio`` ``(channels, samples)``, fed in blocks of at most
        :data:`BLOCK_FRAMES`: the line stages release what they held back in bursts of seconds (a whine
        window's half is 6 s), and a burst's tiles would all be in memory at once."""
        pieces = [self._core.process(model_audio[:, start: start + BLOCK_FRAMES])
                  for start in range(0, model_audio.shape[1], BLOCK_FRAMES)]
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((self.channels, 0), np.float32)

    @property
    def hum_hz(self) -> float | None:
        """The hum fundamental the hum stage has taken out (see :attr:`~cassette_denoise.hum.HumRemover.found_hz`)."""
        return self._front.hum_hz

    @property
    def whine_hz(self) -> list[float]:
        """The whine lines the whine stage has taken out (see :attr:`~cassette_denoise.whine.WhineRemover.found_hz`)."""
        return self._front.whine_hz


def mask_exponents(mask_exponent: float, treble_mask_exponent: float) -> float | torch.Tensor:
    """The exponent for every bin, ``(BINS, 1)``: ``mask_exponent`` up to ``TREBLE_RAMP_HZ[0]``,
    ``treble_mask_exponent`` from ``TREBLE_RAMP_HZ[1]`` up, linear in frequency in between.

    Equal exponents give the plain number, so the mask is raised exactly as with one exponent.
    """
    if treble_mask_exponent == mask_exponent:
        return mask_exponent
    low, high = TREBLE_RAMP_HZ
    share = ((spectral.bin_frequencies_hz(MODEL_SAMPLE_RATE) - low) / (high - low)).clamp(0.0, 1.0)
    return (mask_exponent + share * (treble_mask_exponent - mask_exponent)).float().unsqueeze(-1)


def _check_finite_output(audio: np.ndarray, *, what: str) -> None:
    """Refuse to hand back NaN or infinity as audio (the input checks exist so that this never fires)."""
    if not np.isfinite(audio).all():
        raise FloatingPointError(f"{what} has non-finite samples; this is a bug, please report it with the input")


def _dbfs(peak: float) -> float:
    return 20 * np.log10(max(peak, 1e-12))
