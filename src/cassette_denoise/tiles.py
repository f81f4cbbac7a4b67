"""The tiled mask path at the model rate: STFT frames in, the model's mask over overlapping tiles, cross-faded,
raised to the calibrated exponent, floored, applied, and overlap-added back to audio.

On a CPU the channels of a tile run side by side, each on one thread (:func:`channel_workers`): a tile's
convolutions split across threads wait for the slowest at every layer, where two channels on two threads
never wait for each other (measured: one stereo tile in 30 ms instead of 40-47 ms, two threads, bfloat16).
The stream leaves the latest tile running while its caller goes on with the next blocks (reading, the hum
stage, writing), so that work does not leave the model's cores idle either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.model import UNet
from cassette_denoise.precision import reduced_precision

TILE_FRAMES = 512
#: Frames each tile shares with the next: the model runs TILE_FRAMES / (TILE_FRAMES - overlap) times per
#: frame, so this sets most of the speed. Chosen on the validation split (docs/MODEL_CARD.md, "Model details").
TILE_OVERLAP_FRAMES = 64
#: Frames on either side of a tile that its automatic noise floor also looks at. Tape noise is steady
#: over minutes, while one tile of dense music may never show it: a longer window finds the quiet
#: frames among more music. A tile then waits for this many frames after it (about 6 s).
NOISE_FLOOR_CONTEXT_FRAMES = 512


class MaskTap(Protocol):
    """Receives what a stream computed, so a caller can re-apply the model's mask at another strength or
    without the hum stage and never run the network again (``cassette-denoise serve`` does)."""

    def model_audio(self, block: np.ndarray) -> None:
        """The next samples the mask path sees: ``(channels, n)`` at the model rate, after the hum stage."""

    def mask(self, mask: torch.Tensor) -> None:
        """The cross-faded model mask of the next final frames, ``(channels, BINS, frames)``, before the
        exponent and the floor."""


class MaskStream:
    """The tiled mask path at the model rate, on absolute frame indices.

    Coordinates: the signal is preceded by :func:`spectral.pad_amount` zeros; frame ``f`` covers
    padded samples ``[f * HOP, f * HOP + N_FFT)``; tile ``j`` covers frames
    ``[j * tile_hop, j * tile_hop + TILE_FRAMES)``. After tile ``j`` the frames before
    ``(j + 1) * tile_hop`` are final; after frame ``f`` is final the padded samples before
    ``(f + 1) * HOP`` are. Each buffer below stores only what is not final yet.
    """

    def __init__(self, model: UNet, *, device: torch.device, compute_dtype: torch.dtype, channels: int,
                 mask_exponent: float | torch.Tensor, mask_floor: float, tap: MaskTap | None = None,
                 noise_floor: torch.Tensor | None = None):
        """``mask_exponent``: one number, or one per bin, ``(BINS, 1)``; ``noise_floor``: the model's
        noise-floor input, ``(channels, BINS)``, or None for each tile's automatic floor (:meth:`_floor_window`)."""
        self.model, self.device, self.channels, self.tap = model, device, channels, tap
        self.compute_dtype = compute_dtype
        self.noise_floor = noise_floor
        self.mask_exponent, self.mask_floor = mask_exponent, mask_floor
        workers = channel_workers(channels, device)
        # Torch's thread count belongs to each thread: a worker takes its share once, as it starts.
        self._pool = (ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                         initargs=(max(1, torch.get_num_threads() // workers),))
                      if workers > 1 else None)
        self.tile_hop = TILE_FRAMES - TILE_OVERLAP_FRAMES
        self.crossfade = spectral.crossfade_window(TILE_FRAMES, overlap_frames=TILE_OVERLAP_FRAMES)
        self._samples_in = 0
        self._audio = torch.zeros(channels, spectral.pad_amount())  # padded samples from _audio_start
        self._audio_start = 0
        self._spectra = torch.zeros(channels, spectral.BINS, 0, dtype=torch.complex64)  # from frame _spec_start
        self._mask_sum = torch.zeros(channels, spectral.BINS, 0)
        self._weight_sum = torch.zeros(0)
        self._recent = torch.zeros(channels, spectral.BINS, 0, dtype=torch.complex64)  # the last TILE_FRAMES frames
        # Magnitudes for the automatic noise floor, from frame _floor_start on (kept only without a given floor).
        self._floor_frames = (torch.zeros(channels, spectral.BINS, 0)
                              if noise_floor is None and model.config.noise_floor_input else None)
        self._floor_start = 0
        self._spec_start = 0
        self._next_tile = 0
        self._running: deque[tuple[int, Callable[[], torch.Tensor]]] = deque()  # (first frame, mask)
        self._out_sum = torch.zeros(channels, 0)  # overlap-add of final frames, from padded sample _out_start
        self._out_envelope = torch.zeros(0)
        self._out_start = 0
        self._emitted = 0

    @property
    def _frames_computed(self) -> int:
        return self._spec_start + self._spectra.shape[-1]

    def process(self, block: np.ndarray) -> np.ndarray:
        self._samples_in += block.shape[1]
        if self.tap is not None:
            self.tap.model_audio(block)
        self._audio = torch.cat([self._audio, torch.from_numpy(block)], dim=1)
        self._compute_frames()
        final_frames = self._run_tiles(available_frames=self._frames_computed, ending=False)
        return self._synthesise(final_frames, limit_samples=None)

    def finish(self) -> np.ndarray:
        frames_needed = spectral.frame_count(self._samples_in)
        padded_end = (frames_needed - 1) * spectral.HOP + spectral.N_FFT
        shortfall = padded_end - (self._audio_start + self._audio.shape[1])
        if shortfall > 0:
            self._audio = torch.nn.functional.pad(self._audio, (0, shortfall))
        self._compute_frames()
        self._run_tiles(available_frames=frames_needed, ending=True, in_flight=0)
        if self._next_tile * self.tile_hop < frames_needed:
            self._run_end_tile(frames_needed)
        if self._pool is not None:
            self._pool.shutdown()
        return self._synthesise(frames_needed, limit_samples=self._samples_in)

    def _compute_frames(self) -> None:
        first = self._frames_computed
        usable = (self._audio_start + self._audio.shape[1] - spectral.N_FFT) // spectral.HOP + 1
        if usable <= first:
            return
        offset = first * spectral.HOP - self._audio_start
        segment = self._audio[:, offset: offset + (usable - first - 1) * spectral.HOP + spectral.N_FFT]
        new = spectral.stft(segment)
        self._spectra = torch.cat([self._spectra, new], dim=-1)
        self._recent = torch.cat([self._recent, new], dim=-1)[..., -TILE_FRAMES:]
        if self._floor_frames is not None:
            self._floor_frames = torch.cat([self._floor_frames, new.abs()], dim=-1)
        self._mask_sum = torch.nn.functional.pad(self._mask_sum, (0, new.shape[-1]))
        self._weight_sum = torch.nn.functional.pad(self._weight_sum, (0, new.shape[-1]))
        # Keep only the audio that later frames still need.
        drop = usable * spectral.HOP - self._audio_start
        self._audio = self._audio[:, drop:]
        self._audio_start += drop

    def _run_tiles(self, *, available_frames: int, ending: bool, in_flight: int = 1) -> int:
        """Start every tile whose frames are all computed, and (unless the stream is ``ending``) the context
        of its noise floor, wait until at most ``in_flight`` are still running, and return how many frames
        are final.

        A tile left running works on the channel workers while the caller reads, writes and takes the hum
        out of the next blocks: the front's work fills the cores the model would leave idle meanwhile.
        """
        context = 0 if ending or self._floor_frames is None else NOISE_FLOOR_CONTEXT_FRAMES
        while (self._next_tile * self.tile_hop + TILE_FRAMES + context) <= available_frames:
            start = self._next_tile * self.tile_hop
            offset = start - self._spec_start  # never negative: frames are final only before finished tiles
            self._running.append((start, self._start_mask(self._spectra[..., offset: offset + TILE_FRAMES],
                                                          floor_frames=self._floor_window(start, start + TILE_FRAMES))))
            self._next_tile += 1
            # The end tile starts less than a tile before the next tile.
            self._forget_floor_frames(before=self._next_tile * self.tile_hop - TILE_FRAMES - NOISE_FLOOR_CONTEXT_FRAMES)
        while len(self._running) > in_flight:  # in order, so the masks add up exactly as one after the other
            start, mask = self._running.popleft()
            self._accumulate(start, mask())
        return (self._next_tile - len(self._running)) * self.tile_hop

    def _run_end_tile(self, frames_needed: int) -> None:
        """The last tile ends exactly at the last frame, so the model sees only real audio.

        (A regular tile there would be mostly padding, and the model answers padding by letting the
        hiss before it through.) Only files shorter than one tile are filled, by mirroring.
        """
        spectra = self._recent[..., -TILE_FRAMES:]
        start = frames_needed - spectra.shape[-1]
        mask = self._start_mask(_fill_tile(spectra), floor_frames=self._floor_window(start, frames_needed))()
        self._accumulate(start, mask[..., : spectra.shape[-1]])

    def _floor_window(self, start: int, end: int) -> torch.Tensor | None:
        """The magnitudes the automatic noise floor of the tile of frames ``[start, end)`` is taken over: the
        tile and :data:`NOISE_FLOOR_CONTEXT_FRAMES` computed frames either side, ``(channels, BINS, frames)``;
        None where the floor is given or the model takes none."""
        if self._floor_frames is None:
            return None
        first = max(0, start - NOISE_FLOOR_CONTEXT_FRAMES) - self._floor_start
        return self._floor_frames[..., first: end + NOISE_FLOOR_CONTEXT_FRAMES - self._floor_start]

    def _forget_floor_frames(self, *, before: int) -> None:
        """Drop the floor magnitudes before frame ``before``, which no later tile's window reaches."""
        if self._floor_frames is not None and before > self._floor_start:
            self._floor_frames = self._floor_frames[..., before - self._floor_start:]
            self._floor_start = before

    def _start_mask(self, spectra: torch.Tensor, *, floor_frames: torch.Tensor | None) -> Callable[[], torch.Tensor]:
        """Start the model on a full tile of complex spectra ``(channels, BINS, TILE_FRAMES)``, its automatic
        noise floor taken over ``floor_frames`` (see :meth:`_floor_window`) unless one is given; the returned
        function waits for its mask, ``(channels, BINS, TILE_FRAMES)``."""
        def forward(channels: slice) -> torch.Tensor:
            if floor_frames is not None:
                floor = spectral.noise_floor(floor_frames[channels])
            else:  # given, one per channel, or None for a model without a noise-floor input
                floor = None if self.noise_floor is None else self.noise_floor[channels]
            features = spectral.features(spectra[channels].abs(), noise_floor=self.model.config.noise_floor_input,
                                         floor=floor)
            # Inference mode and autocast hold per thread: entered here, by whichever thread runs this.
            with torch.inference_mode(), reduced_precision(self.device, self.compute_dtype):
                return self.model(features.to(self.device, memory_format=torch.channels_last),
                                  logits=True).float().cpu()

        def mask(logits: list[torch.Tensor]) -> torch.Tensor:
            # The sigmoid in float32: bfloat16 would round a mask of 0.99 to steps of 0.004 (0.03 dB).
            return torch.sigmoid(torch.cat(logits)).squeeze(1)

        if self._pool is None:  # a GPU takes all channels as one batch; one CPU thread takes them in turn
            each = [slice(None)] if self.device.type != "cpu" else [slice(c, c + 1) for c in range(self.channels)]
            done = mask([forward(channels) for channels in each])
            return lambda: done
        # One channel per worker: a batch would be no faster and take more memory.
        running = [self._pool.submit(forward, slice(channel, channel + 1)) for channel in range(self.channels)]
        return lambda: mask([future.result() for future in running])

    def _accumulate(self, start: int, mask: torch.Tensor) -> None:
        """Add a tile's cross-fade-weighted mask for the frames from ``start`` that are not final yet."""
        skip = max(0, self._spec_start - start)
        width = min(mask.shape[-1], TILE_FRAMES, self._frames_computed - start)
        weights = self.crossfade[skip:width]
        first = start + skip - self._spec_start
        self._mask_sum[..., first: first + width - skip] += mask[..., skip:width] * weights
        self._weight_sum[first: first + width - skip] += weights

    def _synthesise(self, final_frames: int, *, limit_samples: int | None) -> np.ndarray:
        """Overlap-add the newly final frames and return the signal samples that became final."""
        count = final_frames - self._spec_start
        if count > 0:
            mask = self._mask_sum[..., :count] / self._weight_sum[:count]
            if self.tap is not None:
                self.tap.mask(mask)
            # The trained masks are too timid where they are well below 1 (see the model card's
            # calibration); a power sharpens them and leaves a mask of 1 exactly 1.
            mask = (mask**self.mask_exponent).clamp(min=self.mask_floor)
            frame_sum, envelope = spectral.istft_frames(self._spectra[..., :count] * mask)
            offset = self._spec_start * spectral.HOP - self._out_start
            grow = offset + frame_sum.shape[-1] - self._out_sum.shape[-1]
            self._out_sum = torch.nn.functional.pad(self._out_sum, (0, grow))
            self._out_envelope = torch.nn.functional.pad(self._out_envelope, (0, grow))
            self._out_sum[:, offset:] += frame_sum
            self._out_envelope[offset:] += envelope
            self._spectra = self._spectra[..., count:]
            self._mask_sum = self._mask_sum[..., count:]
            self._weight_sum = self._weight_sum[count:]
            self._spec_start = final_frames
        # Padded samples before the first non-final frame's start have all their contributions.
        final_end = self._spec_start * spectral.HOP
        ready = final_end - self._out_start
        out = self._out_sum[:, :ready] / self._out_envelope[:ready].clamp(min=1e-3)
        self._out_sum, self._out_envelope = self._out_sum[:, ready:], self._out_envelope[ready:]
        self._out_start = final_end
        # Drop the leading pad, and anything past the signal's end.
        pad = spectral.pad_amount()
        first = max(0, pad - (final_end - ready))
        out = out[:, first:]
        if limit_samples is not None:
            out = out[:, : max(0, limit_samples - self._emitted)]
        self._emitted += out.shape[1]
        return out.numpy()


def channel_workers(channels: int, device: torch.device) -> int:
    """How many of a tile's ``channels`` run side by side: on a CPU one per torch thread, up to one each (each
    then runs on its share of the threads); elsewhere 1, a batch of all."""
    return max(1, min(channels, torch.get_num_threads())) if device.type == "cpu" else 1


def _fill_tile(spectra: torch.Tensor) -> torch.Tensor:
    """Extend a file shorter than one tile, ``(channels, BINS, frames)``, to ``TILE_FRAMES`` by mirroring it in time.

    Mirrored music is a more natural context for the model than a cliff into silence; the masks of
    the filled frames are discarded.
    """
    while spectra.shape[-1] < TILE_FRAMES:
        spectra = torch.cat([spectra, spectra.flip(-1)], dim=-1)
    return spectra[..., :TILE_FRAMES]
