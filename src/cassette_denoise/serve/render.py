"""Re-apply a recorded model mask, and draw what it does: the numbers behind the page, no web code.

The denoiser's stream hands its mask path's input and the model's cross-faded mask to a
:class:`~cassette_denoise.tiles.MaskTap`; with those two, another strength or the hum stage
switched off costs one STFT, one inverse STFT and a resampling: no network.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.image import imsave

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE

#: Frames transformed at once: bounds the working memory of a long file to a few tens of MB.
CHUNK_FRAMES = 2048
#: The spectrograms' one colour scale, dB re a full-scale sine, so before and after compare by eye.
SPECTROGRAM_RANGE_DB = (-110.0, -10.0)
SPECTROGRAM_COLUMNS = 1000
#: Image rows, spaced evenly on the mel scale from SPECTROGRAM_LOW_HZ up: hum, rumble and the music's body
#: live in the lowest tenth of a linear axis.
SPECTROGRAM_ROWS = 200
SPECTROGRAM_LOW_HZ = 40.0
#: Floor curves are sent at every second bin: the page's plot is 720 px wide.
SPECTROGRAM_BIN_STEP = 2
#: The noise floor is this quantile of each bin's level over the file, as the model's own noise-floor input is.
FLOOR_QUANTILE = spectral.NOISE_FLOOR_QUANTILE
#: Frames the noise-floor quantile looks at, spread evenly over the file (a quantile needs no more).
FLOOR_FRAMES = 4000
#: The band whose floor the page quotes as one number: where cassette hiss lives and music is sparse.
HISS_BAND_HZ = (4000.0, 16000.0)


def mask_gain(shaped_mask: torch.Tensor, *, strength_db: float) -> torch.Tensor:
    """The gain the denoiser applies, ``(channels, BINS, frames)``: the mask already raised to the
    model's exponent (:func:`shape_mask`), floored at ``-strength_db`` dB, as the stream's synthesis does."""
    return shaped_mask.clamp(min=10 ** (-strength_db / 20))


def shape_mask(mask: torch.Tensor, *, exponent: float | torch.Tensor) -> torch.Tensor:
    """The raw cross-faded mask raised to the exponent (one number, or ``(BINS, 1)``): the part of the gain
    that no setting changes, so it is computed once per file."""
    return mask**exponent


def resynthesise(audio: np.ndarray, shaped_mask: torch.Tensor, *, strength_db: float,
                 start: int = 0, stop: int | None = None) -> np.ndarray:
    """Apply a recorded mask to the mask path's input as the stream does, for samples ``[start, stop)``.

    Only the frames that touch the range are transformed, in chunks, so a few seconds around the
    playhead come back at once and a whole file costs no more memory than a chunk.

    Args:
        audio: ``(channels, samples)`` float32 at the model rate.
        shaped_mask: ``(channels, BINS, frames)`` with ``frames == spectral.frame_count(samples)``.
    Returns:
        ``(channels, stop - start)`` float32 at the model rate.
    """
    channels, samples = audio.shape
    frames = spectral.frame_count(samples)
    if shaped_mask.shape != (channels, spectral.BINS, frames):
        raise ValueError(f"mask shaped {tuple(shaped_mask.shape)} does not fit audio shaped {audio.shape}")
    stop = samples if stop is None else stop
    if not 0 <= start < stop <= samples:
        raise ValueError(f"sample range [{start}, {stop}) is not inside 0-{samples}")
    pad = spectral.pad_amount()
    # Padded sample p is covered by frames p // HOP - 1 and p // HOP only (N_FFT < 2 * HOP).
    first_frame = max(0, (start + pad) // spectral.HOP - 1)
    end_frame = min(frames, (stop - 1 + pad) // spectral.HOP + 1)
    padded = _padded(audio)
    origin = first_frame * spectral.HOP
    out_sum = torch.zeros(channels, (end_frame - first_frame + 1) * spectral.HOP)
    envelope = torch.zeros(out_sum.shape[-1])
    for first in range(first_frame, end_frame, CHUNK_FRAMES):
        last = min(end_frame, first + CHUNK_FRAMES)
        spectra = spectral.stft(padded[:, first * spectral.HOP: (last - 1) * spectral.HOP + spectral.N_FFT])
        frame_sum, frame_envelope = spectral.istft_frames(
            spectra * mask_gain(shaped_mask[..., first:last], strength_db=strength_db))
        offset = first * spectral.HOP - origin
        out_sum[:, offset: offset + frame_sum.shape[-1]] += frame_sum
        envelope[offset: offset + frame_envelope.shape[-1]] += frame_envelope
    out = out_sum / envelope.clamp(min=1e-3)
    return out[:, start + pad - origin: stop + pad - origin].numpy()


def levels_db(audio: np.ndarray, shaped_mask: torch.Tensor | None, frames: np.ndarray, *,
              strength_db: float) -> np.ndarray:
    """Level of the chosen STFT frames, averaged over channels, in dB re a full-scale sine: the input's
    (``shaped_mask`` None) or the masked spectrum the output is made of.

    Args:
        audio: ``(channels, samples)`` at the model rate.
        shaped_mask: ``(channels, BINS, all_frames)`` (:func:`shape_mask`) or None.
        frames: frame indices, ``(count,)``.
    Returns:
        ``(BINS, count)`` float32.
    """
    padded = _padded(audio)
    starts = torch.as_tensor(frames, dtype=torch.long) * spectral.HOP
    offsets = torch.arange(spectral.N_FFT)
    windows = padded[:, starts[:, None] + offsets[None, :]]  # (channels, count, N_FFT)
    magnitude = torch.fft.rfft(windows * spectral.window(), n=spectral.N_FFT).abs().transpose(-1, -2)
    if shaped_mask is not None:
        magnitude = magnitude * mask_gain(shaped_mask[..., frames], strength_db=strength_db)
    power = (magnitude**2).mean(dim=0)
    return (10 * torch.log10(power / spectral.FULL_SCALE_MAGNITUDE**2 + 1e-14)).numpy().astype(np.float32)


def spectrogram_png(level_db: np.ndarray) -> bytes:
    """A PNG of a ``(BINS, columns)`` level map on :data:`SPECTROGRAM_RANGE_DB`, mel-spaced rows (each the
    loudest bin in its band), low frequencies at the bottom."""
    rows = level_db[row_bins()].max(axis=1)  # (rows, columns)
    low, high = SPECTROGRAM_RANGE_DB
    buffer = io.BytesIO()
    imsave(buffer, rows, vmin=low, vmax=high, cmap=colormaps["magma"], origin="lower", format="png")
    return buffer.getvalue()


def row_bins() -> np.ndarray:
    """For each image row, the bins it draws, ``(SPECTROGRAM_ROWS, bins_per_row)`` (repeated at the
    bottom, where a row is narrower than a bin)."""
    def mel(hz):
        return 2595 * np.log10(1 + np.asarray(hz) / 700)

    top_hz = MODEL_SAMPLE_RATE / 2
    edges_mel = np.linspace(mel(SPECTROGRAM_LOW_HZ), mel(top_hz), SPECTROGRAM_ROWS + 1)
    edges_bin = 700 * (10 ** (edges_mel / 2595) - 1) * spectral.N_FFT / MODEL_SAMPLE_RATE
    first = np.clip(np.floor(edges_bin[:-1]), 0, spectral.BINS - 1).astype(int)
    last = np.clip(np.ceil(edges_bin[1:]), first + 1, spectral.BINS).astype(int)
    width = int((last - first).max())
    return np.minimum(first[:, None] + np.arange(width)[None, :], (last - 1)[:, None])


def column_frames(total_frames: int, *, start_s: float, end_s: float, columns: int = SPECTROGRAM_COLUMNS) -> np.ndarray:
    """The STFT frame drawn in each image column for the time range ``[start_s, end_s)``, ``(≤ columns,)``."""
    seconds_per_frame = spectral.HOP / MODEL_SAMPLE_RATE
    first = int(np.clip(start_s / seconds_per_frame, 0, total_frames - 1))
    last = int(np.clip(np.ceil(end_s / seconds_per_frame), first + 1, total_frames))
    return np.unique(np.linspace(first, last - 1, num=min(columns, last - first)).round().astype(np.int64))


def noise_floor_db(level_db: np.ndarray) -> np.ndarray:
    """Each bin's :data:`FLOOR_QUANTILE` quantile over time of a ``(BINS, frames)`` level map, ``(BINS,)``."""
    return np.quantile(level_db, FLOOR_QUANTILE, axis=1).astype(np.float32)


def band_level_db(floor_db: np.ndarray, *, band_hz: tuple[float, float] = HISS_BAND_HZ) -> float:
    """The power mean of a ``(BINS,)`` floor over ``band_hz``, in dB."""
    frequencies = spectral.bin_frequencies_hz(MODEL_SAMPLE_RATE).numpy()
    inside = (frequencies >= band_hz[0]) & (frequencies < band_hz[1])
    return float(10 * np.log10(np.mean(10 ** (floor_db[inside] / 10))))


def floor_frames(total_frames: int) -> np.ndarray:
    """Frames, spread evenly over a file, that its noise floor is estimated from."""
    return np.unique(np.linspace(0, total_frames - 1, num=min(FLOOR_FRAMES, total_frames)).round().astype(np.int64))


def _padded(audio: np.ndarray) -> torch.Tensor:
    """The signal as the mask path frames it (:func:`spectral.pad_signal`), ``(channels, (frames - 1) * HOP + N_FFT)``."""
    return spectral.pad_signal(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
