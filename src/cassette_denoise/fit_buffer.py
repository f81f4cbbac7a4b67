"""What a streaming line stage (:mod:`cassette_denoise.hum`, :mod:`cassette_denoise.whine`) holds between
blocks: its input, and the lines it fitted on overlapping stretches of it, each weighted by its stretch's
cross-fade. A sample is given out, less the fits normalised by the cross-fades over it, once the stage says
no later stretch reaches it.
"""

from __future__ import annotations

import numpy as np


class FitBuffer:
    """Input ``(channels, n)`` float32 from absolute sample :attr:`start`, and the fits over the same span.

    ``history`` samples before the last one are always kept: a stage's end stretch may start that far back.
    Memory stays flat however long the stream.
    """

    def __init__(self, channels: int, *, history: int):
        self.channels, self.history = channels, history
        self._audio = np.zeros((channels, 0), np.float32)
        self._fit: np.ndarray | None = None  # none until a fit is added: most stretches of most tapes have none
        # (start, counts from, cross-fade) of the placed stretches that reach past what was given out.
        self._placed: list[tuple[int, int, np.ndarray]] = []
        self.start = 0  # absolute index of the buffers' first sample
        self.emitted = 0
        self.total = 0

    def append(self, block: np.ndarray) -> None:
        """Add ``block`` ``(channels, n)`` float32 at the end."""
        self.total += block.shape[1]
        self._audio = np.concatenate([self._audio, block], axis=1)
        if self._fit is not None:
            self._fit = np.pad(self._fit, ((0, 0), (0, block.shape[1])))

    @property
    def held_samples(self) -> int:
        """How many samples of input the buffer holds."""
        return self._audio.shape[1]

    def audio(self, start: int, length: int) -> np.ndarray:
        """The input over absolute samples ``[start, start + length)`` (a view; shorter at the end)."""
        return self._audio[:, start - self.start: start - self.start + length]

    def place(self, start: int, crossfade: np.ndarray) -> None:
        """A stretch from absolute ``start`` whose fits are weighted by ``crossfade`` ``(length,)``; its weight
        counts from the first sample not yet given out."""
        self._placed.append((start, max(start, self.emitted), crossfade))

    def add(self, start: int, fit: np.ndarray) -> None:
        """Add ``fit`` ``(channels, length)``, already weighted by its stretch's cross-fade, from ``start``."""
        if self._fit is None:
            self._fit = np.zeros((self.channels, self.total - self.start))
        self._fit[:, start - self.start: start - self.start + fit.shape[1]] += fit

    def emit(self, final: int) -> np.ndarray:
        """Samples ``[emitted, final)`` with the fits subtracted ``(channels, final - emitted)``; drops what
        neither a placed stretch nor the history needs."""
        first, last = self.emitted - self.start, final - self.start
        out = self._audio[:, first:last].copy()
        if self._fit is not None and self._fit[:, first:last].any():  # else the input is the output, bit for bit
            fit = self._fit[:, first:last]
            weight = self._weight(self.emitted, final)
            out = (out - np.divide(fit, weight, out=np.zeros_like(fit), where=weight > 0)).astype(np.float32)
        self.emitted = final
        self._placed = [placed for placed in self._placed if placed[0] + len(placed[2]) > final]
        drop = max(0, min(final, self.total - self.history) - self.start)
        self._audio = self._audio[:, drop:]
        if self._fit is not None:
            self._fit = self._fit[:, drop:]
        self.start += drop
        return out

    def _weight(self, first: int, last: int) -> np.ndarray:
        """The placed stretches' cross-fades summed over absolute samples ``[first, last)`` ``(last - first,)``:
        1 where two halves meet, less at a stream's ends."""
        weight = np.zeros(last - first)
        for start, counts_from, crossfade in self._placed:
            low, high = max(first, counts_from), min(last, start + len(crossfade))
            if low < high:
                weight[low - first: high - first] += crossfade[low - start: high - start]
        return weight
