"""Mains hum removal: fit the harmonics of 50 or 60 Hz and subtract them, before the mask model.

Why a stage of its own: hum is a handful of exactly periodic tones, and an STFT bin is 43 Hz wide, so a
mask cannot take out 50 Hz without the bass around it. A sinusoid fit over 1.5 s resolves about 1 Hz:
it removes the tones and leaves the music next to them.

Each segment of :data:`SEGMENT_SAMPLES` (half-overlapping) is Hann-windowed and demodulated at every
harmonic ``k · mains`` up to :data:`MAX_HZ`. In one segment a harmonic looks like hum when it stands
:data:`PROMINENCE_DB` above the spectrum a few hertz around it and keeps its phase and level between the
segment's halves. That alone is not enough: music holds a partial within 0.1 Hz of some multiple of 50
or 60 Hz for a second often enough (measured: one clean excerpt in eight lost 20 dB of its energy to a
per-segment test). Hum does not come and go with the notes, so a harmonic is removed from a segment
only if it looked like hum in :data:`HOLD_FRACTION` of the segments within :data:`HOLD_SEGMENTS` on
either side (about 3 s each way) and at least :data:`MIN_LINES` harmonics of the same mains frequency
do. The fitted tones are cross-faded between segments and subtracted. Mains at exactly 50 or 60 Hz:
hum picked up in the playback chain; hum recorded onto the tape moves with its speed and is left to
the mask model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE

SEGMENT_SAMPLES = 1 << 16  # 1.49 s at 44.1 kHz: ~1.3 Hz Hann main lobe, short enough to follow level changes
MAINS_HZ = (50.0, 60.0)
MAX_HZ = 1000.0
PROMINENCE_DB = 10.0
NEIGHBOURHOOD_HZ = (2.0, 6.0)  # where the spectrum around a line is measured, either side
MAX_PHASE_TURN_RAD = 0.5  # between a segment's halves: a line within ~0.1 Hz of the harmonic
MIN_LINES = 3  # harmonics of one mains frequency that must hold, per channel, before any is removed
HOLD_SEGMENTS = 4  # segments each side (hop 0.74 s) over which a line must hold
HOLD_FRACTION = 0.6
MIN_HOLD_SEGMENTS = 3  # a file shorter than this many segments (~2.2 s) is left alone


@dataclass(frozen=True)
class _Segment:
    """One analysed segment: where it lies, and per mains frequency the fitted complex amplitude of each
    harmonic and whether it looked like hum there, ``(channels, harmonics)`` each."""

    start: int
    length: int
    amplitudes: tuple[np.ndarray, ...]
    lines: tuple[np.ndarray, ...]


def analyse_segment(segment: np.ndarray, sample_rate: int, start: int) -> _Segment:
    """Fit every harmonic of each mains frequency in ``segment`` ``(channels, samples)``.

    Phases are referred to absolute sample ``start``, so fits of neighbouring segments agree.
    """
    _, length = segment.shape
    segment32 = segment.astype(np.float32)
    window = _hann(length)
    windowed = segment32 * window
    spectrum = np.abs(np.fft.rfft(windowed, axis=-1))  # (channels, bins)
    bins_per_hz = length / sample_rate
    all_amplitudes, all_lines = [], []
    for mains in MAINS_HZ:
        cosine, sine = _phasors(mains, length, sample_rate)  # (harmonics, samples): e^{-iωt} = cosine + i·sine
        # Complex amplitude of each harmonic: a stationary tone A·cos(ωt + φ) gives A·e^{iφ}.
        amplitudes = 2 * _demodulate(windowed, cosine, sine) / window.sum()  # (channels, harmonics)
        line_level = np.abs(amplitudes) * window.sum() / 2  # in the units of the spectrum's peak
        frequencies = _harmonics(mains)
        around = _neighbourhood_level(spectrum, frequencies * bins_per_hz, bins_per_hz)  # (channels, harmonics)
        prominent = line_level > around * 10 ** (PROMINENCE_DB / 20)
        # The phasors start at the segment; refer the phase to absolute time.
        all_amplitudes.append(amplitudes * np.exp(-2j * np.pi * frequencies * (start / sample_rate)))
        all_lines.append((prominent & _steady(segment32, cosine, sine)) if prominent.any() else prominent)
    return _Segment(start, length, tuple(all_amplitudes), tuple(all_lines))


def _steady(segment: np.ndarray, cosine: np.ndarray, sine: np.ndarray) -> np.ndarray:
    """Whether each harmonic keeps its phase and level between the halves of ``segment`` ``(channels,
    samples)``: ``(channels, harmonics)``.

    A note 1 Hz off a harmonic is inside the window's main lobe; it shows as a phase that turns between the
    two halves of the segment (2π · 1 Hz · 0.74 s), where hum's does not. This costs as much as the fit
    itself, and only decides for lines that stand out, so :func:`analyse_segment` asks only when one does:
    in music without hum, in few segments.
    """
    half = segment.shape[-1] // 2
    half_window = _hann(half)
    first, second = (_demodulate(segment[:, part] * half_window, cosine[:, part], sine[:, part])
                     for part in (slice(0, half), slice(half, 2 * half)))
    turn = np.abs(np.angle(second * np.conj(first)))
    return (turn < MAX_PHASE_TURN_RAD) & (np.abs(second) < 2 * np.abs(first)) & (np.abs(first) < 2 * np.abs(second))


def held_hum(segments: list[_Segment], index: int, sample_rate: int) -> tuple[np.ndarray, float | None]:
    """The hum to take out of ``segments[index]``, ``(channels, length)``: its fitted harmonics that held
    over the neighbouring ``segments`` (zeros where none did), and the mains frequency they belong to
    (``None`` where none did)."""
    segment = segments[index]
    neighbours = segments[max(0, index - HOLD_SEGMENTS): index + HOLD_SEGMENTS + 1]
    channels = segment.amplitudes[0].shape[0]
    if len(neighbours) < MIN_HOLD_SEGMENTS:
        return np.zeros((channels, segment.length), np.float32), None
    best, best_energy = None, 0.0
    for which, mains in enumerate(MAINS_HZ):
        held = np.mean([item.lines[which] for item in neighbours], axis=0) >= HOLD_FRACTION
        # Hum is a family of lines; a lone steady line at a harmonic is more often a note's partial.
        held &= held.sum(axis=-1, keepdims=True) >= MIN_LINES
        amplitudes = np.where(held, segment.amplitudes[which], 0)
        energy = float(np.sum(np.abs(amplitudes) ** 2))
        if energy > best_energy:
            best, best_energy = (mains, amplitudes), energy
    if best is None:
        return np.zeros((channels, segment.length), np.float32), None
    mains, amplitudes = best
    frequencies = _harmonics(mains)
    local = amplitudes * np.exp(2j * np.pi * frequencies * (segment.start / sample_rate))
    cosine, sine = _phasors(mains, segment.length, sample_rate)
    # Re(a · e^{iωt}) = Re(a)·cos(ωt) + Im(a)·(−sin(ωt)).
    return _dot(local.real.astype(np.float32), cosine) + _dot(local.imag.astype(np.float32), sine), mains


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for float32 arrays, on torch's threads: numpy's BLAS threads would spin against the
    model's between tiles (measured: the stage cost 0.025 of real-time factor that way, 0.009 this way)."""
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


def _demodulate(audio: np.ndarray, cosine: np.ndarray, sine: np.ndarray) -> np.ndarray:
    """Complex sums of ``audio`` ``(channels, samples)`` against each harmonic's ``exp(-iωt)``, given as its
    real and imaginary parts ``(harmonics, samples)``: ``(channels, harmonics)``."""
    return _dot(audio, cosine.T) + 1j * _dot(audio, sine.T)


def _harmonics(mains_hz: float) -> np.ndarray:
    """The frequencies of the harmonics fitted, ``k · mains_hz`` up to :data:`MAX_HZ`, Hz."""
    return mains_hz * np.arange(1, int(MAX_HZ // mains_hz) + 1)


@functools.lru_cache(maxsize=4)
def _phasors(mains_hz: float, length: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of ``exp(-iωt)`` for every harmonic, ``(harmonics, length)`` float32 each;
    every full segment reuses them."""
    frequencies = _harmonics(mains_hz)
    cycles = np.outer(frequencies, np.arange(length) / sample_rate)
    # The phase is reduced to one cycle in float64, then the trigonometry runs in float32, as the tables are
    # kept: 4x faster (this table is the largest one-off cost of a process's first file), error ~2e-7.
    angle = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
    return np.cos(angle), -np.sin(angle)


def _neighbourhood_level(spectrum: np.ndarray, centre_bins: np.ndarray, bins_per_hz: float) -> np.ndarray:
    """Median magnitude ``(channels, harmonics)`` of the bins 2-6 Hz either side of each of ``centre_bins``
    ``(harmonics,)``."""
    near, far = (int(round(hz * bins_per_hz)) for hz in NEIGHBOURHOOD_HZ)
    offsets = np.arange(near, far + 1)
    picks = np.round(centre_bins).astype(int)[:, None] + np.concatenate([-offsets, offsets])  # (harmonics, picks)
    inside = (picks >= 0) & (picks < spectrum.shape[-1])
    if inside.all():  # always, but at rates so low that the harmonics reach the ends of the spectrum
        return np.median(spectrum[:, picks], axis=-1)
    return np.stack([np.median(spectrum[:, row[keep]], axis=-1) for row, keep in zip(picks, inside)], axis=-1)


@functools.lru_cache(maxsize=4)
def _hann(length: int) -> np.ndarray:
    """A symmetric Hann window ``(length,)`` float32, read-only: every full segment reuses it."""
    window = np.hanning(length).astype(np.float32)
    window.flags.writeable = False
    return window


class HumRemover:
    """Streaming hum removal for float ``(channels, n)`` blocks at one rate.

    ``process(block)`` returns the samples that are final (the output lags the input by about
    ``HOLD_SEGMENTS + 2`` half-segments, 4.5 s at 44.1 kHz); ``finish()`` returns the rest.
    Concatenated, the output has exactly the input's length.
    """

    def __init__(self, *, channels: int, sample_rate: int):
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.channels, self.sample_rate = channels, sample_rate
        # Scale the segment with the rate so that the frequency resolution stays the same.
        self.segment = 2 * max(1024, int(round(SEGMENT_SAMPLES * sample_rate / MODEL_SAMPLE_RATE)) // 2)
        self.hop = self.segment // 2
        # One sin² hump per segment: sums to 1 across neighbours half a segment apart.
        self._crossfade = spectral.crossfade_window(self.segment, overlap_frames=self.hop).double().numpy()
        self._audio = np.zeros((channels, 0), np.float64)  # input from absolute sample _start
        self._hum = np.zeros((channels, 0), np.float64)  # weighted hum of the decided segments, same span
        self._weight = np.zeros(0, np.float64)
        self._start = 0  # absolute index of the buffers' first sample
        self._emitted = 0
        self._total = 0
        # The analysed segments a decision can still read: absolute indices _first_segment onwards.
        self._segments: list[_Segment] = []
        self._first_segment = 0
        self._decided = 0  # absolute index of the first segment whose hum is not yet in _hum
        self._segments_with_hum = dict.fromkeys(MAINS_HZ, 0)

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float64)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, samples) block, got shape {block.shape}")
        self._total += block.shape[1]
        self._audio = np.concatenate([self._audio, block], axis=1)
        self._hum = np.pad(self._hum, ((0, 0), (0, block.shape[1])))
        self._weight = np.pad(self._weight, (0, block.shape[1]))
        while self._analysed * self.hop + self.segment <= self._total:
            self._analyse(self._analysed * self.hop)
        self._decide(until=self._analysed - HOLD_SEGMENTS)
        undecided = self._decided - self._first_segment
        return self._emit(self._segments[undecided].start if self._decided < self._analysed else self._emitted)

    def finish(self) -> np.ndarray:
        if self._segments and self._segments[-1].start + self.segment < self._total:
            # The last segment ends at the last sample, so it fits real audio only.
            self._analyse(self._total - self.segment)
        self._decide(until=self._analysed)
        return self._emit(self._total)

    @property
    def found_hz(self) -> float | None:
        """The mains frequency whose hum was taken out of the most segments so far; ``None`` if none was."""
        mains, count = max(self._segments_with_hum.items(), key=lambda item: item[1])
        return mains if count else None

    @property
    def _analysed(self) -> int:
        return self._first_segment + len(self._segments)

    def _analyse(self, start: int) -> None:
        offset = start - self._start
        audio = self._audio[:, offset: offset + self.segment]
        self._segments.append(analyse_segment(audio, self.sample_rate, start))

    def _decide(self, *, until: int) -> None:
        while self._decided < until:
            index = self._decided - self._first_segment
            offset = self._segments[index].start - self._start
            hum, mains = held_hum(self._segments, index, self.sample_rate)
            if mains is not None:  # in most segments of most tapes there is none; adding zeros changes no bit
                self._segments_with_hum[mains] += 1
                self._hum[:, offset: offset + self.segment] += hum * self._crossfade
            self._weight[offset: offset + self.segment] += self._crossfade
            self._decided += 1
        # Later decisions read back at most HOLD_SEGMENTS segments; older fits would pile up over an hour.
        stale = max(0, self._decided - HOLD_SEGMENTS - self._first_segment)
        self._segments = self._segments[stale:]
        self._first_segment += stale

    def _emit(self, final: int) -> np.ndarray:
        """Return samples ``[_emitted, final)`` and drop what no segment still needs."""
        first, last = self._emitted - self._start, final - self._start
        hum = self._hum[:, first:last]
        if hum.any():  # else subtracting the zeros as they are gives the same bits
            weight = self._weight[first:last]
            hum = np.divide(hum, weight, out=np.zeros_like(hum), where=weight > 0)
        out = (self._audio[:, first:last] - hum).astype(np.float32)
        self._emitted = final
        # Keep one segment of history: the end segment starts up to a segment before the last sample.
        drop = max(0, min(final, self._total - self.segment) - self._start)
        self._audio, self._hum, self._weight = self._audio[:, drop:], self._hum[:, drop:], self._weight[drop:]
        self._start += drop
        return out
