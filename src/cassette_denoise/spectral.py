"""The package's one STFT, its inverse, and the dB feature scaling the model sees.

The seed's settings: 44.1 kHz, 512 frequency bins, hop 512. An even FFT size of 1022 gives exactly
512 bins (the seed's 1023 did too); with a periodic Hann window and hop 512 the squared windows
overlap-add to between 0.5 and 1.0 everywhere, so weighted overlap-add inverts the STFT exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from cassette_denoise.audio import MODEL_SAMPLE_RATE

N_FFT = 1022
HOP = 512
BINS = N_FFT // 2 + 1  # 512
#: The STFT magnitude of a full-scale sine: the window's sum / 2. Features are dB against this
#: FIXED reference, never the file's maximum, so a tile's features do not depend on the rest of the
#: file (the seed's per-file reference made training and prediction disagree).
FULL_SCALE_MAGNITUDE = N_FFT / 4
FLOOR_DB = -120.0
CEILING_DB = 0.0


def bin_frequencies_hz(sample_rate: int = MODEL_SAMPLE_RATE) -> torch.Tensor:
    """The centre frequency of each STFT bin at ``sample_rate``, ``(BINS,)`` float64."""
    return torch.arange(BINS, dtype=torch.float64) * sample_rate / N_FFT


def window(device: torch.device | str | None = None) -> torch.Tensor:
    """The analysis and synthesis window, ``(N_FFT,)``."""
    return torch.hann_window(N_FFT, periodic=True, device=device)


def stft(frames_audio: torch.Tensor) -> torch.Tensor:
    """Complex spectra of every whole frame in a signal, without padding.

    Frame ``f`` covers samples ``[f * HOP, f * HOP + N_FFT)``; callers pad so that the frames they
    need exist (see :func:`frame_count`).

    Args:
        frames_audio: ``(..., samples)`` real.
    Returns:
        ``(..., BINS, frames)`` complex.
    """
    frames = frames_audio.unfold(-1, N_FFT, HOP) * window(frames_audio.device)
    return torch.fft.rfft(frames, n=N_FFT).transpose(-1, -2)


def istft_frames(spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed overlap-add of frames, *not yet* divided by the window envelope.

    Returning the sum and the envelope separately lets a streaming caller add the frames of the
    next block before dividing. ``N_FFT < 2 * HOP``, so each frame touches two hop-blocks; padding
    frames to ``2 * HOP`` makes the overlap-add a reshape and one shifted sum.

    Args:
        spectra: ``(..., BINS, frames)`` complex.
    Returns:
        ``(signal_sum, envelope)``: ``(..., (frames + 1) * HOP)`` and ``((frames + 1) * HOP,)``; sample 0
        is the start of frame 0.
    """
    win = window(spectra.device)
    frames = torch.fft.irfft(spectra.transpose(-1, -2), n=N_FFT) * win
    return _overlap_add(frames), _overlap_add((win**2).expand(spectra.shape[-1], N_FFT))


def _overlap_add(frames: torch.Tensor) -> torch.Tensor:
    """``(..., frames, N_FFT)`` -> ``(..., (frames + 1) * HOP)``."""
    padded = torch.nn.functional.pad(frames, (0, 2 * HOP - N_FFT))
    halves = padded.unflatten(-1, (2, HOP))
    count = frames.shape[-2]
    out = frames.new_zeros(*frames.shape[:-2], count + 1, HOP)
    out[..., :count, :] += halves[..., 0, :]
    out[..., 1:, :] += halves[..., 1, :]
    return out.flatten(-2)


def frame_count(samples: int) -> int:
    """Frames needed so that every sample of a signal is covered when it is padded by :func:`pad_amount`."""
    return -(-(samples + HOP) // HOP)


def pad_amount() -> int:
    """Zeros placed before the signal so that its first sample lies where the windows overlap-add to ≥ 0.5."""
    return HOP


def pad_signal(audio: torch.Tensor) -> torch.Tensor:
    """A whole signal as the mask path frames it: :func:`pad_amount` zeros before, zeros after up to
    the end of frame ``frame_count(samples) - 1``, so that :func:`stft` gives exactly the frames the
    denoiser computes for it.

    Args:
        audio: ``(..., samples)``.
    Returns:
        ``(..., (frame_count(samples) - 1) * HOP + N_FFT)``.
    """
    samples = audio.shape[-1]
    end = (frame_count(samples) - 1) * HOP + N_FFT
    return torch.nn.functional.pad(audio, (pad_amount(), end - pad_amount() - samples))


def to_features(magnitude: torch.Tensor) -> torch.Tensor:
    """Scale a magnitude spectrogram to the model's input range.

    dB re :data:`FULL_SCALE_MAGNITUDE`, clipped to ``[FLOOR_DB, CEILING_DB]`` and mapped linearly to
    ``[-1, 1]``. Shape is kept.
    """
    db = 20 * torch.log10(magnitude / FULL_SCALE_MAGNITUDE + 1e-12)
    db = db.clamp(FLOOR_DB, CEILING_DB)
    return (db - FLOOR_DB) / (CEILING_DB - FLOOR_DB) * 2 - 1


#: The noise-floor channel is this quantile of each bin's features over the frames a tile spans:
#: tape hiss is stationary, so a low quantile over ~6 s tracks the hiss level in every bin (and,
#: where music never pauses, an upper bound on it).
NOISE_FLOOR_QUANTILE = 0.1


def noise_floor(magnitude: torch.Tensor) -> torch.Tensor:
    """Each bin's :data:`NOISE_FLOOR_QUANTILE` quantile of :func:`to_features` over all frames.

    Over a tile of noisy music it is the level a mask must take out; over a clip of the tape's noise
    alone (a lead-in, a pause) it is that noise's own floor.

    Args:
        magnitude: ``(..., BINS, frames)``.
    Returns:
        ``(..., BINS)`` in feature units.
    """
    return _floor_of_magnitudes(magnitude)


def _floor_of_magnitudes(magnitude: torch.Tensor) -> torch.Tensor:
    """:func:`noise_floor`, under a name that :func:`features`' ``noise_floor`` option does not hide."""
    rank = max(1, round(NOISE_FLOOR_QUANTILE * magnitude.shape[-1]))
    if magnitude.device.type == "cpu":
        # numpy's selection is 2-6x faster than torch.kthvalue on a CPU. The scaling to features keeps
        # order, so selecting among magnitudes first gives the same value on far fewer logarithms.
        order = torch.from_numpy(np.partition(magnitude.detach().numpy(), rank - 1, axis=-1)[..., rank - 1])
    else:
        order = magnitude.kthvalue(rank, dim=-1).values
    return to_features(order)


def features(magnitude: torch.Tensor, *, noise_floor: bool, floor: torch.Tensor | None = None) -> torch.Tensor:
    """The model's input channels for a magnitude spectrogram: the one place, for training and
    inference alike, that turns spectra into what the network sees.

    Channel 0 is :func:`to_features`. With ``noise_floor``, the next channel holds each bin's noise
    floor repeated over time: the level a mask must take out, which the model cannot see from a few
    frames of dense music. It is ``floor`` when given (measured on the tape's noise alone, see
    :func:`noise_floor`), else the floor of these frames themselves, so callers pass exactly the
    frames of one tile.

    Args:
        magnitude: ``(batch, BINS, frames)``.
        floor: ``(BINS,)`` or ``(batch, BINS)`` in feature units.
    Returns:
        ``(batch, 1 + noise_floor, BINS, frames)``.
    """
    scaled = to_features(magnitude)
    channels = [scaled]
    if noise_floor:
        if floor is None:
            floor = _floor_of_magnitudes(magnitude)
        elif floor.shape[-1] != scaled.shape[-2]:
            raise ValueError(f"a noise floor needs one value per bin ({scaled.shape[-2]}), got {tuple(floor.shape)}")
        channels.append(floor.to(scaled).unsqueeze(-1).expand_as(scaled))
    return torch.stack(channels, dim=1)


def crossfade_window(tile_frames: int, *, overlap_frames: int) -> torch.Tensor:
    """Weights for blending tiles that overlap their neighbours by ``overlap_frames``, ``(tile_frames,)``.

    ``sin²`` ramps over the first and last ``overlap_frames``, 1 in between, sampled at half-frame
    offsets: strictly positive (so a lone tile at the start or end of a file is still defined) and
    summing to exactly 1 across neighbours placed ``tile_frames - overlap_frames`` apart. An overlap
    of half a tile gives one ``sin²`` hump over the whole tile.

    Raises:
        ValueError: ``overlap_frames`` outside ``1 … tile_frames // 2``.
    """
    if not 1 <= overlap_frames <= tile_frames // 2:
        raise ValueError(f"overlap_frames must be between 1 and {tile_frames // 2}, got {overlap_frames}")
    positions = torch.arange(tile_frames, dtype=torch.float64) + 0.5
    from_edge = torch.minimum(positions, tile_frames - positions)
    ramp = torch.sin(0.5 * torch.pi * (from_edge / overlap_frames).clamp(max=1.0)) ** 2
    return ramp.float()
