"""Hum removal: find a family of harmonics with a fundamental anywhere in 45–65 Hz, follow its drift and
subtract it, before the mask model.

Why a stage of its own: hum is a handful of periodic tones, and an STFT bin is 43 Hz wide, so a mask
cannot take out 50 Hz without the bass around it. A sinusoid fit over 1.5 s resolves about 1 Hz: it
removes the tones and leaves the music next to them. Why 45–65 Hz and not 50 or 60: hum recorded onto
the tape plays back at the deck's speed (a deck 4 % slow puts 50 Hz at 48 Hz), and the speed wanders,
moving the lines by up to about 1 % over seconds.

Each segment of :data:`SEGMENT_SAMPLES` (half-overlapping) is analysed on its own:

1. **search**: in the Hann-windowed spectrum, the fundamental on a fine grid over :data:`FUNDAMENTAL_HZ`
   whose harmonics up to :data:`MAX_HZ` meet the most energy in peaks that stand :data:`PROMINENCE_DB`
   above the spectrum a few hertz around them; at least :data:`MIN_LINES` must;
2. **refine**: each line's frequency from its peak, the fundamental as their weighted least-squares fit,
   then again from the phase each line turns between the segment's halves (a 0.1 Hz error turns a line
   by 0.5 rad there), which resolves the fundamental to a few millihertz;
3. **steadiness**: a line counts as hum there when it turns with the family (within
   :data:`MAX_PHASE_TURN_RAD` of the common fit) and keeps its level between the halves.

That alone is not enough: music holds a note with harmonic partials, or a partial near some line, for
seconds often enough. Hum does not come and go with the notes, and its level does not change, so a
harmonic is removed from a segment only if it looked like hum, within :data:`LEVEL_TOLERANCE_DB` of its
median level, in :data:`HOLD_FRACTION` of the segments around it whose fundamental lies within
:data:`SAME_HUM_FRACTION` of this one's (drift moves hum less; a bass line moves by semitones, 6 %), and
at least :data:`MIN_LINES` harmonics do. Around means :data:`HOLD_SEGMENTS` either side (about 3 s) at
50 or 60 Hz, where hum is likely, and :data:`OFF_SPEED_HOLD_SEGMENTS` (about 7 s) off them, where a bass
chord is as likely; there a family also needs an odd harmonic. Each such segment is then fitted along
the hum's own phase: the fundamental's frequency runs through the estimates of the segment and its two
neighbours (a parabola, centre to centre) and its integral is every harmonic's phase, so a drifting line
stays in phase across the segment. The fitted tones are cross-faded between segments and subtracted.

What it costs is in proportion to what it finds. The search and the steadiness test look at nothing above
:data:`MAX_HZ`, so they run on a copy of the signal decimated by :data:`ANALYSIS_DECIMATION` (44.1 kHz to
2.76 kHz): the same bins per hertz from a sixteenth of the samples. Only the fit, where hum held, runs
at the full rate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, Resampler, output_length
from cassette_denoise.fit_buffer import FitBuffer

SEGMENT_SAMPLES = 1 << 16  # 1.49 s at 44.1 kHz: ~1.3 Hz Hann main lobe, short enough to follow level changes
FUNDAMENTAL_HZ = (45.0, 65.0)  # 50 and 60 Hz mains, played up to ~8 % off speed
MAX_HZ = 1000.0
MAX_HARMONICS = int(MAX_HZ // FUNDAMENTAL_HZ[0])
PROMINENCE_DB = 10.0
NEIGHBOURHOOD_HZ = (2.0, 6.0)  # where the spectrum around a line is measured, either side
MAX_PHASE_TURN_RAD = 0.5  # between a segment's halves, after the family's turn: a line within ~0.1 Hz of it
MIN_LINES = 3  # harmonics of one fundamental that must hold, per channel, before any is removed
HOLD_SEGMENTS = 4  # segments each side (hop 0.74 s) over which a line at the mains frequency must hold
#: Off the mains frequency a family must hold longer: a bass chord is held for 7 s often enough.
OFF_SPEED_HOLD_SEGMENTS = 10
MAINS_HZ = (50.0, 60.0)
MAINS_TOLERANCE = 0.005  # relative: the grid's own wander; the nearest equal-tempered notes lie 2 % away
HOLD_FRACTION = 0.6
MIN_HOLD_SEGMENTS = 3  # a file shorter than this many segments (~2.2 s) is left alone
LEVEL_TOLERANCE_DB = 4.0  # a line holds where its level lies this close to its median over the window
_ABSENT_DB = -1000.0
MAX_FAMILIES = 2  # line families searched per segment: hum, and a bass note over it
SAME_HUM_FRACTION = 0.03  # neighbouring fundamentals this close (relative) belong to the same hum
FOUND_RESOLUTION_HZ = 0.1  # found_hz is reported to this; round(..., 1) below
ANALYSIS_DECIMATION = 16  # at most (a power of 2); less where the rate would fall below MIN_ANALYSIS_RATE_HZ
#: soxr passes up to ~91 % of the decimated Nyquist frequency flat: it must reach the top harmonic's neighbourhood.
MIN_ANALYSIS_RATE_HZ = 2 * (MAX_HZ + NEIGHBOURHOOD_HZ[1]) / 0.91


@dataclass(frozen=True)
class _Family:
    """A family of steady lines found in one segment: its fundamental, which of its harmonics looked like
    hum there, and their levels (in the demodulation's own units), ``(channels, MAX_HARMONICS)`` each."""

    fundamental_hz: float
    lines: np.ndarray
    levels: np.ndarray


@dataclass(frozen=True)
class _Segment:
    """One analysed segment: where it lies, and the line families found there (none where no family
    stood out; two where, say, a bass note sounds over hum)."""

    start: int
    length: int
    families: tuple[_Family, ...]

    def family_near(self, reference_hz: float) -> _Family | None:
        """The family within :data:`SAME_HUM_FRACTION` of ``reference_hz``, if any."""
        near = [item for item in self.families if abs(item.fundamental_hz / reference_hz - 1) <= SAME_HUM_FRACTION]
        return min(near, key=lambda item: abs(item.fundamental_hz - reference_hz), default=None)


def analyse_segment(segment: np.ndarray, sample_rate: float, *, start: int, length: int) -> _Segment:
    """Search ``segment`` ``(channels, samples)`` at ``sample_rate`` (the analysis rate) for families of steady
    harmonic lines; ``start`` and ``length`` place it in the full-rate signal."""
    segment32 = segment.astype(np.float32)
    spectrum = np.abs(np.fft.rfft(segment32 * _hann(segment.shape[-1]), axis=-1))  # (channels, bins)
    # In most segments of most tapes the search finds nothing, and there is nothing more to pay for.
    found = (_steady_lines(segment32, spectrum, coarse_hz, sample_rate)
             for coarse_hz in _search_fundamentals(spectrum, length=segment.shape[-1], sample_rate=sample_rate))
    return _Segment(start, length, tuple(family for family in found if family is not None))


def _search_fundamentals(spectrum: np.ndarray, *, length: int, sample_rate: int) -> list[float]:
    """Up to :data:`MAX_FAMILIES` fundamentals, each the one whose harmonics meet the most peaks that
    stand out of ``spectrum`` ``(channels, bins)`` (of a Hann-windowed ``length``) and that no earlier one
    met, refined from those peaks, Hz; fewer where no candidate meets :data:`MIN_LINES` peaks."""
    bins_per_hz = length / sample_rate
    below, above, valid = _search_grid(length, sample_rate)  # (candidates, harmonics) each
    top = int(above.max()) + 2
    # The channels' power together, as far as the neighbourhood of the top harmonic reaches.
    magnitude = np.sqrt(np.sum(spectrum[:, :top + int(NEIGHBOURHOOD_HZ[1] * bins_per_hz) + 1] ** 2, axis=0))
    lowest = int(below[valid].min()) - 1
    # Only a local maximum can be a line: the neighbourhood's median (the search's main cost) only there.
    maximum = np.ones(top, bool)
    maximum[1:-1] = (magnitude[1:top - 1] >= magnitude[:top - 2]) & (magnitude[1:top - 1] >= magnitude[2:top])
    maximum[:lowest] = False
    candidates = np.flatnonzero(maximum)
    around = _neighbourhood_level(magnitude[None], candidates, bins_per_hz)[0]
    level = magnitude[candidates]
    peak = level > around * 10 ** (PROMINENCE_DB / 20)
    # Each line counts by how far it stands out, up to a cap: a family of lines, not one loud partial.
    ratio = level / np.maximum(around, 1e-30)  # digital silence has no neighbourhood
    prominence_db = np.zeros(top)
    prominence_db[candidates] = np.where(peak, np.minimum(20 * np.log10(ratio + 1e-30), _CAP_DB), 0.0)
    magnitude = magnitude[:top]
    found = []
    for _ in range(MAX_FAMILIES):
        met = np.maximum(prominence_db[below], prominence_db[above]) * valid  # (candidates, harmonics)
        counts = np.count_nonzero(met, axis=-1)
        scores = np.where(counts >= MIN_LINES, met.sum(axis=-1), 0.0)
        best = int(np.argmax(scores))
        if scores[best] == 0:
            break
        chosen = np.where(prominence_db[below[best]] >= prominence_db[above[best]], below[best], above[best])
        chosen, weights = chosen[met[best] > 0], 10 ** (met[best][met[best] > 0] / 10)
        found.append(_fit_peaks(magnitude, chosen, weights, _GRID_HZ[best], bins_per_hz))
        prominence_db[chosen] = 0.0
    return found


def _fit_peaks(magnitude: np.ndarray, peaks: np.ndarray, weights: np.ndarray, coarse_hz: float,
               bins_per_hz: float) -> float:
    """The fundamental near ``coarse_hz`` fitted to the frequencies of the peaks at bins ``peaks`` of
    ``magnitude`` ``(bins,)``, each from a parabola through the log magnitudes around it."""
    left, centre, right = (np.log(magnitude[peaks + offset] + 1e-30) for offset in (-1, 0, 1))
    curvature = left - 2 * centre + right
    shift = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0)
    frequencies = (peaks + shift) / bins_per_hz
    orders = np.round(frequencies / coarse_hz).clip(1)
    return _robust_fit(frequencies / orders, orders, weights, tolerance_hz=0.5 / bins_per_hz)


def _robust_fit(implied_hz: np.ndarray, orders: np.ndarray, weights: np.ndarray, *, tolerance_hz: float) -> float:
    """The fundamental from each line's ``implied_hz`` (its frequency over its order ``orders``): the
    weighted least-squares fit (line ``k`` weighs ``k²·weights``, the inverse variance of its implied
    fundamental) to the lines whose own frequency lies within ``tolerance_hz`` of where the median
    puts it, so that a music partial near one harmonic does not pull the family."""
    median = np.median(implied_hz)
    keep = np.abs(implied_hz - median) * orders <= tolerance_hz
    if not keep.any():  # lines that agree on nothing: the caller's tests will find no family
        return float(median)
    weights = weights[keep] * orders[keep] ** 2
    return float(np.sum(weights * implied_hz[keep]) / np.sum(weights))


_CAP_DB = 30.0  # a line's weight in the search and the fits stops growing here
_GRID_STEP_HZ = 0.01  # moves the top harmonic by a quarter of a bin (0.67 Hz) at most
_GRID_HZ = np.arange(FUNDAMENTAL_HZ[0], FUNDAMENTAL_HZ[1] + _GRID_STEP_HZ / 2, _GRID_STEP_HZ)


@functools.lru_cache(maxsize=4)
def _search_grid(length: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate fundamental of :data:`_GRID_HZ` and harmonic, the spectrum bins either side of
    it and whether the harmonic is fitted (up to :data:`MAX_HZ`, below Nyquist), ``(candidates, harmonics)``."""
    frequencies = np.outer(_GRID_HZ, np.arange(1, MAX_HARMONICS + 1))
    valid = frequencies <= min(MAX_HZ, 0.45 * sample_rate)
    position = np.where(valid, frequencies, 0) * length / sample_rate
    below = np.floor(position).astype(int)
    return below, below + 1, valid


def _steady_lines(segment: np.ndarray, spectrum: np.ndarray, coarse_hz: float,
                  sample_rate: int) -> _Family | None:
    """The fundamental refined from the phase each harmonic turns between the halves of ``segment``
    ``(channels, samples)``, and which harmonics are hum-like there; ``None`` where fewer than
    :data:`MIN_LINES` are.

    A note 1 Hz off a harmonic is inside the window's main lobe; it shows as a phase that turns against
    the family's between the two halves (2π · 1 Hz · 0.74 s), where hum's turns with it. This costs as
    much as a fit, so :func:`analyse_segment` asks only when the search found a family, and only of the
    harmonics that stand out.
    """
    channels, length = segment.shape
    half, bins_per_hz = length // 2, length / sample_rate
    orders = np.arange(1, _harmonic_count(coarse_hz, sample_rate) + 1)
    centres = coarse_hz * orders * bins_per_hz
    prominence = _peak_level(spectrum, centres) / np.maximum(_neighbourhood_level(spectrum, centres, bins_per_hz),
                                                             1e-30)
    lines = prominence > 10 ** (PROMINENCE_DB / 20)  # (channels, harmonics)
    orders = orders[lines.any(axis=0)]
    lines, prominence = lines[:, orders - 1], prominence[:, orders - 1]
    if len(orders) < MIN_LINES:
        return None
    # Both halves against one table (half the trigonometry); the harmonic's own turn over half a segment is
    # then taken out of the second, so that what is left is a line's turn against the harmonic.
    cosine, sine = _phasors(coarse_hz * _sample_index(half) / sample_rate, orders)  # (orders, half)
    halves = (segment[:, :2 * half].reshape(channels, 2, half) * _hann(half)).reshape(2 * channels, half)
    first, second = _demodulate(halves, cosine, sine).reshape(channels, 2, -1).transpose(1, 0, 2)  # (channels, orders)
    cycles = coarse_hz * orders * half / sample_rate
    second = second * np.exp(-2j * np.pi * (cycles - np.rint(cycles)))
    lines &= (np.abs(second) < 2 * np.abs(first)) & (np.abs(first) < 2 * np.abs(second))
    # Each line's turn implies an offset of the fundamental (a line within 0.34 Hz of the family turns by
    # less than π/2); the robust fit makes a music partial near one harmonic an outlier.
    turn_per_hz = 2 * np.pi * half / sample_rate
    implied_hz = np.angle(second * np.conj(first)) / (turn_per_hz * orders)
    if not lines.any():
        return None
    weights = np.minimum(prominence, 10 ** (_CAP_DB / 20)) ** 2
    offset_hz = _robust_fit(implied_hz[lines], np.broadcast_to(orders, lines.shape)[lines], weights[lines],
                            tolerance_hz=MAX_PHASE_TURN_RAD / turn_per_hz)
    lines &= np.abs(implied_hz - offset_hz) * orders * turn_per_hz < MAX_PHASE_TURN_RAD
    if np.count_nonzero(lines.any(axis=0)) < MIN_LINES:  # lines that stand out, but not one family
        return None
    found = np.zeros((channels, MAX_HARMONICS), bool)
    found[:, orders - 1] = lines
    levels = np.zeros((channels, MAX_HARMONICS))
    levels[:, orders - 1] = np.abs(first) + np.abs(second)
    return _Family(coarse_hz + offset_hz, found, levels)


def held_hum(segments: list[_Segment], index: int, audio: np.ndarray,
             sample_rate: int) -> tuple[np.ndarray, float | None]:
    """The hum to take out of ``segments[index]``, whose samples ``audio`` ``(channels, length)`` are: its
    harmonics that held over the neighbouring ``segments``, fitted along the hum's phase (zeros where none
    held), and the fundamental there (``None`` where none held)."""
    segment = segments[index]
    channels, length = audio.shape
    nothing = np.zeros((channels, length), np.float32), None
    # The segment's own families first; where loud music hid the hum here, the neighbours say where it is.
    candidates = [family.fundamental_hz for family in segment.families]
    candidates += [family.fundamental_hz for item in _window(segments, index, OFF_SPEED_HOLD_SEGMENTS)
                   for family in item.families if segment.family_near(family.fundamental_hz) is None]
    if len(segments) < MIN_HOLD_SEGMENTS or not candidates:
        return nothing
    reference_hz, held, neighbours = max(((hz, *_held_lines(segments, index, hz)) for hz in candidates),
                                         key=lambda found: np.count_nonzero(found[1]))
    held[:, _harmonic_count(reference_hz, sample_rate):] = False
    orders = np.flatnonzero(held.any(axis=0)) + 1
    if not len(orders):
        return nothing
    if segment.family_near(reference_hz) is None:
        reference_hz = float(np.median([family.fundamental_hz for item in neighbours
                                        if (family := item.family_near(reference_hz)) is not None]))
    held = held[:, orders - 1]
    cosine, sine = _phasors(_track_cycles(segments, index, reference_hz, sample_rate), orders)
    window = _hann(length)
    # Complex amplitude of each harmonic along the track: A·cos(kθ + φ) gives A·e^{iφ}.
    amplitudes = 2 * _demodulate(audio.astype(np.float32) * window, cosine, sine) / window.sum()
    amplitudes = np.where(held, amplitudes, 0)
    # Re(a · e^{ikθ}) = Re(a)·cos(kθ) + Im(a)·(−sin(kθ)).
    hum = _dot(amplitudes.real.astype(np.float32), cosine) + _dot(amplitudes.imag.astype(np.float32), sine)
    return hum, reference_hz


def _window(segments: list[_Segment], index: int, reach: int) -> list[_Segment]:
    """The ``2 · reach + 1`` segments around ``segments[index]``; a full window even at a file's ends (a
    note held for its first 2.5 s is not hum either), so there it shifts inwards."""
    first = max(0, min(index - reach, len(segments) - (2 * reach + 1)))
    return segments[first: first + 2 * reach + 1]


def _held_lines(segments: list[_Segment], index: int, reference_hz: float) -> tuple[np.ndarray, list[_Segment]]:
    """Which harmonics of the family at ``reference_hz`` looked like hum, at one level, in
    :data:`HOLD_FRACTION` of the segments around ``segments[index]``, ``(channels, MAX_HARMONICS)`` (none
    in a channel where fewer than :data:`MIN_LINES` did), and those segments: :data:`HOLD_SEGMENTS` either
    side at the mains frequency, :data:`OFF_SPEED_HOLD_SEGMENTS` off it.

    The level matters: hum's lines keep theirs within a decibel for minutes, where a held bass note
    decays by 3-4 dB a second and the next voice on the same note has partials 20 dB apart.
    """
    at_mains = any(abs(reference_hz / mains - 1) <= MAINS_TOLERANCE for mains in MAINS_HZ)
    neighbours = _window(segments, index, HOLD_SEGMENTS if at_mains else OFF_SPEED_HOLD_SEGMENTS)
    families = [family for item in neighbours if (family := item.family_near(reference_hz)) is not None]
    if not families:
        return np.zeros((1, MAX_HARMONICS), bool), neighbours
    # Line levels in dB, far below anything where a segment has no line (or no family, as far as the median
    # is concerned): the median is a line's level only where it was a line in most of the window.
    absent = np.full_like(families[0].levels, _ABSENT_DB)
    levels_db = np.stack([np.where(family.lines, 20 * np.log10(family.levels + 1e-30), _ABSENT_DB)
                          for family in families] + [absent] * (len(neighbours) - len(families)))
    typical_db = np.median(levels_db, axis=0)  # (channels, MAX_HARMONICS)
    steady = np.abs(levels_db - typical_db) <= LEVEL_TOLERANCE_DB
    held = np.count_nonzero(steady & (levels_db > _ABSENT_DB), axis=0) >= HOLD_FRACTION * len(neighbours)
    # Hum is a family of lines; a lone steady line at a harmonic is more often a note's partial.
    held &= held.sum(axis=-1, keepdims=True) >= MIN_LINES
    if not at_mains:  # even harmonics alone are a note an octave up, at 90-130 Hz
        held &= held[:, ::2].any(axis=-1, keepdims=True)
    return held, neighbours


def _track_cycles(segments: list[_Segment], index: int, reference_hz: float, sample_rate: int) -> np.ndarray:
    """The fundamental's phase over ``segments[index]``, cycles from its centre, ``(length,)`` float64.

    Its frequency is the parabola (or line, or constant) through the estimates of the three segments
    nearest this one (itself and its two neighbours, but for the file's ends) that belong to the same
    hum, each placed at its segment's centre: a drift of 0.5 % at 0.2 Hz bends the frequency within a
    segment, and a fit at one frequency would leave the higher harmonics out of phase at its ends.
    """
    segment = segments[index]
    nearby = sorted(segments[max(0, index - 2): index + 3], key=lambda item: abs(item.start - segment.start))
    points = [((item.start - segment.start) / sample_rate, family.fundamental_hz)
              for item in nearby if (family := item.family_near(reference_hz)) is not None][:3]
    if not points:
        points = [(0.0, reference_hz)]
    times, frequencies = np.array(points).T
    frequency = np.polyfit(times, frequencies, len(points) - 1)  # Hz as a polynomial in seconds from the centre
    seconds = (_sample_index(segment.length) - segment.length / 2) / sample_rate
    return np.polyval(np.polyint(frequency), seconds)


def _harmonic_count(fundamental_hz: float, sample_rate: int) -> int:
    """How many harmonics of ``fundamental_hz`` are fitted: up to :data:`MAX_HZ`, below Nyquist."""
    return min(MAX_HARMONICS, int(min(MAX_HZ, 0.45 * sample_rate) // fundamental_hz))


#: Products of fewer multiply-adds than this (the analysis's) run on the calling thread: waking torch's pool
#: costs more than they do (measured beside the model: 62 µs against 10 µs for (4, 2048) @ (2048, 20)), and
#: numpy's BLAS runs them on one thread too.
_POOL_MIN_MULTIPLY_ADDS = 1 << 18


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for float32 arrays; a large one on torch's threads: numpy's BLAS threads would spin against
    the model's between tiles (measured: the stage cost 0.025 of real-time factor that way, 0.009 this way)."""
    if a.shape[0] * a.shape[1] * b.shape[-1] < _POOL_MIN_MULTIPLY_ADDS:
        return a @ b
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


def _demodulate(audio: np.ndarray, cosine: np.ndarray, sine: np.ndarray) -> np.ndarray:
    """Complex sums of ``audio`` ``(channels, samples)`` against each harmonic's ``exp(-ikθ)``, given as its
    real and imaginary parts ``(harmonics, samples)``: ``(channels, harmonics)``."""
    return _dot(audio, cosine.T) + 1j * _dot(audio, sine.T)


def _phasors(cycles: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of ``exp(-2πi·k·cycles)`` for each harmonic ``k`` of ``orders``,
    ``(orders, samples)`` float32 each, from the fundamental's phase ``cycles`` ``(samples,)``.

    The phase is reduced to the nearest whole cycle in float64; the rest runs in float32, 4x faster: the
    angles stay within π·:data:`MAX_HARMONICS`, where float32 resolves them to ~1e-5 rad.
    """
    fraction = (cycles - np.rint(cycles)).astype(np.float32)
    angle = np.outer((2 * np.pi * np.asarray(orders)).astype(np.float32), fraction)
    return np.cos(angle), -np.sin(angle)


def _peak_level(spectrum: np.ndarray, centre_bins: np.ndarray) -> np.ndarray:
    """The larger magnitude ``(channels, harmonics)`` of the two bins either side of each of ``centre_bins``."""
    below = np.clip(np.floor(centre_bins).astype(int), 0, spectrum.shape[-1] - 2)
    return np.maximum(spectrum[:, below], spectrum[:, below + 1])


def _neighbourhood_level(spectrum: np.ndarray, centre_bins: np.ndarray, bins_per_hz: float) -> np.ndarray:
    """Median magnitude ``(channels, centres)`` of the bins 2-6 Hz either side of each of ``centre_bins``
    ``(centres,)``; bins beyond the spectrum's ends are left out."""
    near, far = (int(round(hz * bins_per_hz)) for hz in NEIGHBOURHOOD_HZ)
    offsets = np.arange(near, far + 1)
    picks = np.round(centre_bins).astype(int)[:, None] + np.concatenate([-offsets, offsets])  # (centres, picks)
    inside = (picks >= 0) & (picks < spectrum.shape[-1])
    if inside.all():  # but for the lowest few bins, and harmonics at the ends of a low rate's spectrum
        return np.median(spectrum[:, picks], axis=-1)
    gathered = np.where(inside, spectrum[:, np.clip(picks, 0, spectrum.shape[-1] - 1)], np.nan)
    return np.nanmedian(gathered, axis=-1)


@functools.lru_cache(maxsize=4)
def _sample_index(length: int) -> np.ndarray:
    """``0 … length - 1`` ``(length,)`` float64, read-only: every full segment reuses it."""
    index = np.arange(length, dtype=np.float64)
    index.flags.writeable = False
    return index


@functools.lru_cache(maxsize=4)
def _hann(length: int) -> np.ndarray:
    """A symmetric Hann window ``(length,)`` float32, read-only: every full segment reuses it."""
    window = np.hanning(length).astype(np.float32)
    window.flags.writeable = False
    return window


class HumRemover:
    """Streaming hum removal for float ``(channels, n)`` blocks at one rate.

    ``process(block)`` returns the samples that are final (the output lags the input by about
    ``OFF_SPEED_HOLD_SEGMENTS + 2`` half-segments, 8.9 s at 44.1 kHz, and by up to 16 s at the start);
    ``finish()`` returns the rest.
    Concatenated, the output has exactly the input's length. Memory stays flat however long the stream.
    """

    def __init__(self, *, channels: int, sample_rate: int):
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.channels, self.sample_rate = channels, sample_rate
        self.decimation = max((factor for factor in (2, 4, 8, 16)
                               if factor <= ANALYSIS_DECIMATION and sample_rate / factor >= MIN_ANALYSIS_RATE_HZ),
                              default=1)
        self.analysis_rate = sample_rate / self.decimation
        # Scale the segment with the rate so that the frequency resolution stays the same; whole analysis
        # samples in each half.
        unit = 2 * self.decimation
        self.segment = unit * max(1, int(round(max(2048, SEGMENT_SAMPLES * sample_rate / MODEL_SAMPLE_RATE) / unit)))
        self.hop = self.segment // 2
        self._decimator = Resampler(sample_rate, self.analysis_rate, channels)
        self._low = np.zeros((channels, 0), np.float32)  # analysis-rate input from analysis sample _low_start
        self._low_start = 0
        self._low_total = 0
        # One sin² hump per segment: sums to 1 across neighbours half a segment apart.
        self._crossfade = spectral.crossfade_window(self.segment, overlap_frames=self.hop).double().numpy()
        # The input and the decided segments' hum, cross-faded. One segment of history: the end segment starts up to a
        # segment before the last sample.
        self._buffer = FitBuffer(channels, history=self.segment)
        # The analysed segments a decision can still read: absolute indices _first_segment onwards.
        self._segments: list[_Segment] = []
        self._first_segment = 0
        self._decided = 0  # absolute index of the first segment whose hum is not yet in the buffer
        # Segments with hum removed, by fundamental in FOUND_RESOLUTION_HZ steps: counts and summed Hz.
        steps = int(round((FUNDAMENTAL_HZ[1] - FUNDAMENTAL_HZ[0]) / FOUND_RESOLUTION_HZ)) + 1
        self._found_counts, self._found_sums = np.zeros(steps), np.zeros(steps)

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, samples) block, got shape {block.shape}")
        self._buffer.append(block)
        self._add_low(self._decimator.process(block))
        self._analyse_available()
        reach = OFF_SPEED_HOLD_SEGMENTS
        self._decide(until=self._analysed - reach if self._analysed >= 2 * reach + 1 else 0)
        undecided = self._decided - self._first_segment
        return self._buffer.emit(self._segments[undecided].start if self._decided < self._analysed
                                 else self._buffer.emitted)

    def finish(self) -> np.ndarray:
        self._add_low(self._decimator.flush(total_out=output_length(self._buffer.total, self.sample_rate,
                                                                     self.analysis_rate)))
        self._analyse_available()
        if self._segments and self._segments[-1].start + self.segment < self._buffer.total:
            # The last segment ends at the last sample, so it fits real audio only.
            self._analyse(self._buffer.total - self.segment)
        self._decide(until=self._analysed)
        return self._buffer.emit(self._buffer.total)

    @property
    def found_hz(self) -> float | None:
        """The hum fundamental taken out so far, Hz to :data:`FOUND_RESOLUTION_HZ`: the mean over the
        segments it was taken out of, within 1 % (a drift's swing) of where most were, so a tape that hums
        at two speeds reports the one it hums at longest; ``None`` if none was."""
        if not self._found_counts.any():
            return None
        width = int(round(0.01 * np.mean(FUNDAMENTAL_HZ) / FOUND_RESOLUTION_HZ))
        box = np.ones(2 * width + 1)
        centre = int(np.argmax(np.convolve(self._found_counts, box, mode="same")))
        around = slice(max(0, centre - width), centre + width + 1)
        mean_hz = self._found_sums[around].sum() / self._found_counts[around].sum()
        return round(float(mean_hz), 1)

    @property
    def _analysed(self) -> int:
        return self._first_segment + len(self._segments)

    def _add_low(self, low: np.ndarray) -> None:
        self._low = np.concatenate([self._low, low], axis=1)
        self._low_total += low.shape[1]

    def _analyse_available(self) -> None:
        """Analyse every regular segment whose samples are in, at both rates (the decimator lags a little)."""
        low_segment = self.segment // self.decimation
        while (self._analysed * self.hop + self.segment <= self._buffer.total
               and (self._analysed * self.hop + self.segment) // self.decimation <= self._low_total):
            self._analyse(self._analysed * self.hop)
        # Later segments start at the next regular one, or the end segment within one segment of the end.
        keep_from = min(self._analysed * self.hop // self.decimation, self._low_total - low_segment)
        drop = max(0, keep_from - self._low_start)
        self._low, self._low_start = self._low[:, drop:], self._low_start + drop

    def _analyse(self, start: int) -> None:
        low_segment = self.segment // self.decimation
        # The end segment's start need not fall on an analysis sample: the nearest one that leaves it whole.
        low_start = max(0, min(int(round(start / self.decimation)), self._low_total - low_segment))
        offset = low_start - self._low_start
        audio = self._low[:, offset: offset + low_segment]
        self._segments.append(analyse_segment(audio, self.analysis_rate, start=start, length=self.segment))

    def _decide(self, *, until: int) -> None:
        while self._decided < until:
            index = self._decided - self._first_segment
            start = self._segments[index].start
            hum, fundamental_hz = held_hum(self._segments, index, self._buffer.audio(start, self.segment),
                                           self.sample_rate)
            if fundamental_hz is not None:  # in most segments of most tapes there is none; adding zeros changes no bit
                step = int(round((fundamental_hz - FUNDAMENTAL_HZ[0]) / FOUND_RESOLUTION_HZ))
                self._found_counts[step] += 1
                self._found_sums[step] += fundamental_hz
                self._buffer.add(start, hum * self._crossfade)
            self._buffer.place(start, self._crossfade)
            self._decided += 1
        # Later decisions read back at most 2 · OFF_SPEED_HOLD_SEGMENTS segments; older ones would pile up
        # over an hour.
        stale = max(0, self._decided - 2 * OFF_SPEED_HOLD_SEGMENTS - self._first_segment)
        self._segments = self._segments[stale:]
        self._first_segment += stale
