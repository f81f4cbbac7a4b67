"""Whine removal: steady tonal lines at 0.3–5.5 kHz that hold through most of ten seconds (a capstan
motor's whine, a bias or pilot-tone beat), tracked through the tape's speed drift and subtracted,
after the hum stage and before the mask model.

Why a stage of its own: a line is one frequency and an STFT bin is 43 Hz wide, so a mask takes a line out
only with the music of its whole bin, and leaves most of it where the music there is louder. A sinusoid
fitted over a third of a second takes the line and leaves the music a few hertz beside it. The line's
frequency wanders with the tape's speed (0.5 % moves a 5 kHz whine by 25 Hz, and back, within seconds),
so the fit follows the line's own frequency track.

The stream is cut into windows of :data:`WINDOW_SAMPLES` (11.9 s at 44.1 kHz), half-overlapping:

1. **detection**: each half window is framed back to back (:data:`DETECT_FRAME` samples, 5.4 Hz bins, the
   channels' mean: a whine enters after the heads, on every channel); in each frame a bin is prominent where,
   after a maximum over :data:`DRIFT_BINS` either side (a drifting line moves), it stands :data:`PROMINENCE_DB`
   above the mean level of the :data:`NEIGHBOURHOOD_BINS` either side. A line holds in a window where it is
   prominent in :data:`HOLD_FRACTION` of the window's frames: music seldom holds one pitch that long, a whine
   always does. Each run of holding bins is one line, at the bin that stood out on its own most often, if that
   bin's level (its loudest neighbour within the drift's reach) stays within :data:`DETECT_LEVEL_TOLERANCE_DB`
   of its median in as many frames (notes that recur at one pitch come and go); at most :data:`MAX_LINES`.
   Once they are fitted, what is left is searched once more (two lines closer than the drift allowance are
   found as one run).
2. **tracking**: half-overlapping sub-segments of :data:`TRACK_SAMPLES` (0.37 s) give the line's coarse
   track: the loudest continuous ridge near its detected frequency (a drifting line moves smoothly, the notes
   around it come and go), each step at the peak beside the ridge and refined by a parabola through the log
   spectrum, median-filtered. The line's phase is the integral of the track, and the phase by which the fit
   against it turns from one sub-segment to the next corrects the track (a phase vocoder), twice.
3. **fit**: the line's complex amplitude in each sub-segment is its windowed projection onto that phase,
   cross-faded between sub-segments. A line whose level stays within :data:`LEVEL_TOLERANCE_DB` of its
   median in fewer than :data:`HOLD_FRACTION` of the sub-segments is left alone (a held note decays or
   swells; a whine keeps its level), and a sub-segment above that band (a note at the line's pitch) keeps
   the line at its median level. Each line is fitted to what the ones before it left.

The windows' fits are cross-faded (``sin²`` over the window) and subtracted. A window where nothing holds
costs only the detection; the output lags the input by up to a window, and a stream shorter than
:data:`MIN_WINDOW_SAMPLES` is left alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cassette_denoise import spectral
from cassette_denoise.fit_buffer import FitBuffer

WINDOW_SAMPLES = 1 << 19  # 11.9 s at 44.1 kHz: a whine holds through it, a held note seldom
MIN_WINDOW_SAMPLES = 1 << 18  # a stream shorter than this (5.9 s) is left alone: too short to tell a note
BAND_HZ = (300.0, 5500.0)  # above the hum stage's harmonics' reach and a 5 kHz whine's drift
DETECT_FRAME = 1 << 13  # 5.4 Hz bins at 44.1 kHz
PROMINENCE_DB = 8.0
NEIGHBOURHOOD_BINS = 20  # ±108 Hz at 44.1 kHz: the local level a line must stand out of
DRIFT_BINS = 5  # ±27 Hz: a 5 kHz line drifting 0.5 % stays within it
HOLD_FRACTION = 0.75
MAX_LINES = 8
TRACK_SAMPLES = 1 << 14  # 0.37 s: a 2.7 Hz bin; a drifting line moves less than one within it
DRIFT_FRACTION = 0.006  # how far (relative) a sub-segment's peak may lie from the detected frequency
MEDIAN_SUB_SEGMENTS = 5  # the coarse track's median filter
CORRECTIONS = 2  # phase-vocoder passes over the track
JUMP_COST_DB = 3.0  # the ridge's cost per bin squared a step moves
MAX_JUMP_BINS = 3  # 8 Hz per 0.19 s
RIDGE_CAP_DB = 30.0  # above the range's median level, a louder step earns the ridge no more
LEVEL_TOLERANCE_DB = 3.0
#: The detection's looser level test: a frame's level is its loudest bin within the drift's reach, music included.
DETECT_LEVEL_TOLERANCE_DB = 6.0
MIN_REAL_SHARE = 0.5  # sub-segments at a file's ends with less real audio than this don't judge the level


@dataclass(frozen=True)
class DetectionFrames:
    """Frames of a stretch of audio as the detection sees them, over the bins ``low …`` of
    :data:`DETECT_FRAME`-sample frames that the band needs, ``(frames, bins)`` each."""

    low: int
    level_db: np.ndarray  # the channels' mean, dB, after the drift's maximum
    held: np.ndarray  # bool: prominent after the drift's maximum
    own: np.ndarray  # bool: prominent on its own

    @classmethod
    def of(cls, audio: np.ndarray, sample_rate: float) -> "DetectionFrames":
        """``audio`` ``(channels, samples)`` framed back to back (the channels' mean: a whine enters after the
        heads, on every channel)."""
        bins = DETECT_FRAME // 2 + 1
        hz_per_bin = sample_rate / DETECT_FRAME
        low = max(0, int(BAND_HZ[0] / hz_per_bin) - NEIGHBOURHOOD_BINS - DRIFT_BINS)
        high = min(bins, int(BAND_HZ[1] / hz_per_bin) + NEIGHBOURHOOD_BINS + DRIFT_BINS + 2)
        frames = audio.shape[-1] // DETECT_FRAME
        mono = audio[:, :frames * DETECT_FRAME].mean(axis=0).reshape(frames, DETECT_FRAME)
        spectra = np.fft.rfft(mono * _hann(DETECT_FRAME), axis=-1)[:, low:high]
        level_db = 10 * np.log10(spectra.real ** 2 + spectra.imag ** 2 + 1e-20)
        above_db = level_db - ndimage.uniform_filter1d(level_db, 2 * NEIGHBOURHOOD_BINS + 1, axis=-1, mode="nearest")
        pooled = ndimage.maximum_filter1d(above_db, 2 * DRIFT_BINS + 1, axis=-1, mode="nearest")
        return cls(low, ndimage.maximum_filter1d(level_db, 2 * DRIFT_BINS + 1, axis=-1, mode="nearest"),
                   pooled >= PROMINENCE_DB, above_db >= PROMINENCE_DB)

    def __add__(self, later: "DetectionFrames") -> "DetectionFrames":
        return DetectionFrames(self.low, *(np.concatenate([getattr(self, name), getattr(later, name)])
                                           for name in ("level_db", "held", "own")))


def held_lines(frames: DetectionFrames, sample_rate: float) -> list[float]:
    """The lines that held in ``frames``, Hz, most salient first (at most :data:`MAX_LINES`).

    A run of bins prominent in :data:`HOLD_FRACTION` of the frames is one line, at the bin that stood out on its
    own most often (music beside a line may be louder on average), and it counts only where that bin's level
    stays within :data:`DETECT_LEVEL_TOLERANCE_DB` of its median in :data:`HOLD_FRACTION` of the frames: notes
    that recur at one pitch come and go in level, and each candidate left costs a fit."""
    if frames.held.shape[0] == 0:
        return []
    hz_per_bin = sample_rate / DETECT_FRAME
    bins = np.arange(frames.low, frames.low + frames.held.shape[1])
    in_band = (bins >= BAND_HZ[0] / hz_per_bin) & (bins <= BAND_HZ[1] / hz_per_bin)
    held = (frames.held.mean(axis=0) >= HOLD_FRACTION) & in_band
    runs, found = ndimage.label(held)
    if found == 0:
        return []
    # How often a bin stood out on its own, its mean level breaking ties.
    salience = frames.own.sum(axis=0) + 1e-3 * (frames.level_db.mean(axis=0) + 200)
    peaks = [int(peak[0]) for peak in ndimage.maximum_position(salience, runs, index=np.arange(1, found + 1))]
    level_db = frames.level_db[:, peaks]
    steady = np.mean(np.abs(level_db - np.median(level_db, axis=0)) <= DETECT_LEVEL_TOLERANCE_DB, axis=0)
    lines = sorted((peak for peak, fraction in zip(peaks, steady) if fraction >= HOLD_FRACTION),
                   key=lambda peak: -salience[peak])[:MAX_LINES]
    return [(frames.low + peak) * hz_per_bin for peak in lines]


@dataclass
class SubSegments:
    """A window ``(channels, samples)`` cut into half-overlapping sub-segments of :data:`TRACK_SAMPLES` for
    tracking and fitting: half a sub-segment of zeros in front and whole halves to the end, so that every
    real sample lies under two sub-segments whose windows sum to 1 there."""

    padded: np.ndarray  # (channels, halves · hop) float32
    weight: np.ndarray  # (sub_segments,): each sub-segment's window summed over its real samples
    level_db: np.ndarray  # (sub_segments, TRACK_SAMPLES // 2 + 1): the channels' mean, Hann-windowed, dB
    length: int

    @classmethod
    def of(cls, audio: np.ndarray) -> "SubSegments":
        channels, length = audio.shape
        hop = TRACK_SAMPLES // 2
        halves = -(-length // hop) + 2
        padded = np.zeros((channels, halves * hop), np.float32)
        padded[:, hop: hop + length] = audio
        real = np.zeros(halves * hop, np.float32)
        real[hop: hop + length] = 1
        real_halves = real.reshape(halves, hop)
        window = _track_window()
        weight = (real_halves @ window[:hop])[:-1] + (real_halves @ window[hop:])[1:]
        mono = padded.mean(axis=0)  # as the detection: a whine is on every channel
        frames = np.lib.stride_tricks.sliding_window_view(mono, TRACK_SAMPLES)[::hop]
        spectra = np.fft.rfft(frames * _hann(TRACK_SAMPLES), axis=-1)
        level_db = 10 * np.log10(spectra.real ** 2 + spectra.imag ** 2 + 1e-30)
        return cls(padded, weight, level_db, length)

    @property
    def judged(self) -> np.ndarray:
        """The sub-segments with enough real audio to judge a line's level by, ``(sub_segments,)`` bool."""
        return self.weight >= MIN_REAL_SHARE * TRACK_SAMPLES / 2

    def cut(self, padded_line: np.ndarray) -> np.ndarray:
        """The real samples of a ``(channels, halves · hop)`` signal."""
        hop = TRACK_SAMPLES // 2
        return padded_line[:, hop: hop + self.length]


def fit_line(sub: SubSegments, sample_rate: float, frequency_hz: float) -> np.ndarray | None:
    """The steady line near ``frequency_hz`` in ``sub``, tracked and fitted (float32, ``sub.padded``'s shape),
    or ``None`` where its level does not hold (see the module's steps 2-3)."""
    hop = TRACK_SAMPLES // 2
    window = _track_window()
    centres = np.arange(sub.weight.shape[0]) * hop + hop  # padded index of each sub-segment's centre
    coarse_hz, ridge_db = _coarse_track(sub.level_db, sample_rate, frequency_hz)
    # Most candidates in music are partials that come and go: the ridge's level tells, before any fit.
    if not _holds(ridge_db, sub.judged):
        return None
    # The track is linear between knots every quarter sub-segment: the centres and the points between them.
    knots = np.arange(4 * sub.padded.shape[1] // TRACK_SAMPLES + 1) * (TRACK_SAMPLES // 4)
    knot_hz = np.interp(knots, centres, coarse_hz)
    for _ in range(CORRECTIONS):
        amplitude = _project(sub, _phasor(knot_hz, sample_rate), window)  # (channels, sub_segments)
        turn = np.angle(np.sum(amplitude[:, 1:] * np.conj(amplitude[:, :-1]), axis=0))
        correction_hz = turn / (2 * np.pi * hop / sample_rate)
        knot_hz = knot_hz + np.interp(knots, centres[:-1] + hop / 2, correction_hz)
    phasor = _phasor(knot_hz, sample_rate)
    amplitude = _project(sub, phasor, window)
    level_db = 10 * np.log10(np.sum(np.abs(amplitude) ** 2, axis=0) + 1e-30)
    if not _holds(level_db, sub.judged):
        return None
    median_db = float(np.median(level_db[sub.judged]))
    excess_db = np.maximum(level_db - median_db - LEVEL_TOLERANCE_DB, 0.0)
    amplitude = amplitude * 10 ** (-excess_db / 20)
    # Each half's amplitude: the two sub-segments over it, cross-faded.
    edges = np.zeros((amplitude.shape[0], 1), amplitude.dtype)
    before, after = np.concatenate([edges, amplitude], axis=1), np.concatenate([amplitude, edges], axis=1)
    smooth = before[:, :, None] * window[hop:] + after[:, :, None] * window[:hop]  # (channels, halves, hop)
    return 2 * np.real(smooth.reshape(amplitude.shape[0], -1) * phasor)


def _holds(level_db: np.ndarray, judged: np.ndarray) -> bool:
    """Whether a line's level ``(sub_segments,)`` stays within :data:`LEVEL_TOLERANCE_DB` of its median in
    :data:`HOLD_FRACTION` of the ``judged`` sub-segments."""
    if not judged.any():
        return False
    levels = level_db[judged]
    return bool(np.mean(np.abs(levels - np.median(levels)) <= LEVEL_TOLERANCE_DB) >= HOLD_FRACTION)


def _coarse_track(level_db: np.ndarray, sample_rate: float, frequency_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """The line's peak frequency in each sub-segment of ``level_db`` ``(sub_segments, bins)``, median-filtered,
    Hz, and the ridge's level there, dB; ``(sub_segments,)`` each."""
    hz_per_bin = sample_rate / TRACK_SAMPLES
    reach = int(np.ceil(DRIFT_FRACTION * frequency_hz / hz_per_bin)) + 2
    centre = int(round(frequency_hz / hz_per_bin))
    low = max(1, centre - reach)
    high = min(TRACK_SAMPLES // 2 - 1, centre + reach)
    level = level_db[:, low - 1: high + 2]  # (sub_segments, bins around)
    ridge = _ridge(level[:, 1:-1]) + 1
    rows = np.arange(level.shape[0])
    # The ridge is smooth and may run a bin beside the peak: the peak is the loudest bin next to it.
    nearby = np.clip(ridge[:, None] + np.arange(-1, 2), 1, level.shape[1] - 2)
    peak = nearby[rows, np.argmax(level[rows[:, None], nearby], axis=1)]
    left, middle, right = level[rows, peak - 1], level[rows, peak], level[rows, peak + 1]
    curvature = left - 2 * middle + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    track_hz = (low - 1 + peak + np.clip(offset, -0.5, 0.5)) * hz_per_bin
    size = min(MEDIAN_SUB_SEGMENTS, len(track_hz) - (1 - len(track_hz) % 2))
    # ndimage's median with zero padding is scipy.signal.medfilt, without importing scipy.signal (half a second
    # of every process's start).
    smooth = ndimage.median_filter(track_hz, size, mode="constant", cval=0.0) if size >= 3 else track_hz
    return smooth, middle


def _ridge(level_db: np.ndarray) -> np.ndarray:
    """The bin of the loudest continuous path through ``level_db`` ``(sub_segments, bins)``: each step's
    level, less :data:`JUMP_COST_DB` per bin squared it moves (a line drifts smoothly; the notes around
    it come and go), moving at most :data:`MAX_JUMP_BINS`; ``(sub_segments,)`` (dynamic programming)."""
    steps, bins = level_db.shape
    capped = np.minimum(level_db, np.median(level_db) + RIDGE_CAP_DB)
    moves = np.arange(-MAX_JUMP_BINS, MAX_JUMP_BINS + 1)
    total = capped[0].copy()
    came_from = np.zeros((steps, bins), np.int64)
    columns = np.arange(bins)
    for step in range(1, steps):
        sources = np.clip(columns[:, None] + moves, 0, bins - 1)  # (bins, moves)
        candidates = total[sources] - JUMP_COST_DB * moves ** 2
        best = np.argmax(candidates, axis=1)
        came_from[step] = sources[columns, best]
        total = candidates[columns, best] + capped[step]
    path = np.empty(steps, np.int64)
    path[-1] = int(np.argmax(total))
    for step in range(steps - 1, 0, -1):
        path[step - 1] = came_from[step, path[step]]
    return path


def _phasor(knot_hz: np.ndarray, sample_rate: float) -> np.ndarray:
    """``exp(j·phase)`` per sample for a frequency linear between knots a quarter sub-segment apart,
    ``knot_hz`` ``(knots,)``; the phase is its integral from the first knot, ``((knots - 1) · step,)``."""
    step = TRACK_SAMPLES // 4
    start, end = knot_hz[:-1, None], knot_hz[1:, None]
    # Whole cycles before each interval reduced to one, so float64 keeps its precision however long the window.
    before = np.concatenate([[0.0], np.cumsum((knot_hz[:-1] + knot_hz[1:]) / 2 * step / sample_rate)[:-1]]) % 1
    offset = np.arange(step)
    cycles = before[:, None] + (start * offset + (end - start) * offset ** 2 / (2 * step)) / sample_rate
    turn = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32).ravel()
    phasor = np.empty(turn.shape, np.complex64)
    phasor.real, phasor.imag = np.cos(turn), np.sin(turn)
    return phasor


def _project(sub: SubSegments, phasor: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Each sub-segment's complex amplitude of the line along ``phasor``: the windowed mean of the signal
    turned back by it, over real samples only, ``(channels, sub_segments)``."""
    hop = TRACK_SAMPLES // 2
    turned = (sub.padded * np.conj(phasor)).reshape(sub.padded.shape[0], -1, hop)  # (channels, halves, hop)
    # The padding is zeros, so only the weight counts real samples alone.
    halves = turned @ np.stack([window[:hop], window[hop:]], axis=1).astype(np.complex64)  # (channels, halves, 2)
    return (halves[:, :-1, 0] + halves[:, 1:, 1]) / np.maximum(sub.weight, 1e-12)


@functools.cache
def _track_window() -> np.ndarray:
    """The sub-segments' ``sin²`` window, which sums to 1 across neighbours half a sub-segment apart."""
    return spectral.crossfade_window(TRACK_SAMPLES, overlap_frames=TRACK_SAMPLES // 2).numpy()


@functools.cache
def _window_crossfade() -> np.ndarray:
    """The windows' ``sin²`` cross-fade, ``(WINDOW_SAMPLES,)``, made once."""
    return spectral.crossfade_window(WINDOW_SAMPLES, overlap_frames=WINDOW_SAMPLES // 2).double().numpy()


@functools.cache
def _hann(length: int) -> np.ndarray:
    """A periodic Hann window ``(length,)`` float32, read-only: every frame reuses it."""
    window = np.hanning(length + 1)[:-1].astype(np.float32)
    window.flags.writeable = False
    return window


class WhineRemover:
    """Streaming whine removal for float ``(channels, n)`` blocks at one rate.

    ``process(block)`` returns the samples that are final (the output lags the input by up to a window,
    :data:`WINDOW_SAMPLES`); ``finish()`` returns the rest. Concatenated, the output has exactly the
    input's length. Memory stays flat however long the stream.
    """

    def __init__(self, *, channels: int, sample_rate: int):
        if sample_rate < 2 * BAND_HZ[1]:
            raise ValueError(f"sample rate must be at least {2 * BAND_HZ[1]:g} Hz, got {sample_rate}")
        self.channels, self.sample_rate = channels, sample_rate
        self.hop = WINDOW_SAMPLES // 2
        # The input and the windows' fits. A window of history: the end window starts up to a window before the
        # last sample.
        self._buffer = FitBuffer(channels, history=WINDOW_SAMPLES)
        self._windows = 0  # regular windows done: window k starts at k · hop
        self._previous_half: DetectionFrames | None = None  # the last window's second half
        self.found_hz: list[float] = []  # every line taken out so far, Hz, as detected in its first window

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, samples) block, got shape {block.shape}")
        self._buffer.append(block)
        while self._windows * self.hop + WINDOW_SAMPLES <= self._buffer.total:
            self._regular_window()
        return self._buffer.emit(self._windows * self.hop if self._windows else 0)

    def finish(self) -> np.ndarray:
        total = self._buffer.total
        covered = self._windows * self.hop + self.hop if self._windows else 0
        if covered < total:
            # The end window ends at the last sample (or is the whole of a short stream).
            start = max(0, total - WINDOW_SAMPLES)
            audio = self._buffer.audio(start, total - start)
            lines_hz = held_lines(DetectionFrames.of(audio, self.sample_rate), self.sample_rate)
            self._add(start, audio, lines_hz if total >= MIN_WINDOW_SAMPLES else [])
        return self._buffer.emit(total)

    def _regular_window(self) -> None:
        start = self._windows * self.hop
        audio = self._buffer.audio(start, WINDOW_SAMPLES)
        if self._previous_half is None:
            self._previous_half = DetectionFrames.of(audio[:, :self.hop], self.sample_rate)
        second = DetectionFrames.of(audio[:, self.hop:], self.sample_rate)
        self._add(start, audio, held_lines(self._previous_half + second, self.sample_rate))
        self._previous_half = second
        self._windows += 1

    def _add(self, start: int, audio: np.ndarray, lines_hz: list[float]) -> None:
        crossfade = _window_crossfade()[: audio.shape[1]]
        self._buffer.place(start, crossfade)
        sub = None
        for search in range(2):
            fitted = 0
            for frequency_hz in lines_hz:  # most salient first, each fitted to what the ones before left
                if sub is None:
                    sub = SubSegments.of(audio)
                line = fit_line(sub, self.sample_rate, frequency_hz)
                if line is None:
                    continue
                fitted += 1
                sub.padded -= line
                self._buffer.add(start, sub.cut(line) * crossfade)
                if all(abs(frequency_hz / known - 1) > DRIFT_FRACTION for known in self.found_hz):
                    self.found_hz.append(round(frequency_hz, 1))
            if search or not fitted:
                break
            # Lines closer than the detection's drift allowance are found as one: search what is left once.
            audio = sub.cut(sub.padded)
            lines_hz = held_lines(DetectionFrames.of(audio, self.sample_rate), self.sample_rate)
            sub = None
