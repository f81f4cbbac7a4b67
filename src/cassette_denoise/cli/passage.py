"""Passages of a file named on the command line: ``START-END`` with times as seconds, ``m:ss`` or ``h:mm:ss``."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

#: ``12.5``, ``75``, ``1:05``, ``1:05.25``, ``90:00``, ``1:02:03.5``: seconds as a number, or minutes
#: (and hours before them) with two-digit seconds (and minutes) under 60.
TIME = re.compile(r"(?:(?:(?P<hours>\d+):(?P<minutes_of_hour>[0-5]\d))|(?P<minutes>\d+)):(?P<seconds>[0-5]\d(?:\.\d+)?)"
                  r"|(?P<plain>\d+(?:\.\d+)?)")


def parse_time_s(text: str) -> float:
    """``"12.5"`` → 12.5, ``"1:05"`` → 65.0, ``"1:02:03.5"`` → 3723.5.

    Raises:
        ValueError: not one of those forms, naming ``text``.
    """
    match = TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time (seconds, m:ss or h:mm:ss, e.g. 12.5, 1:05 or 1:02:03)")
    if match["plain"] is not None:
        return float(match["plain"])
    minutes = int(match["minutes"]) if match["minutes"] is not None else \
        int(match["hours"]) * 60 + int(match["minutes_of_hour"])
    return minutes * 60 + float(match["seconds"])


def format_time(seconds: float) -> str:
    """``65.25`` → ``"1:05.25"``, ``3723`` → ``"1:02:03"``: to the millisecond, in a form :func:`parse_time_s` reads."""
    millis = int(round(seconds * 1000))
    whole, fraction = divmod(millis, 1000)
    minutes, second = divmod(whole, 60)
    hours, minute = divmod(minutes, 60)
    text = f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"
    return text + (f".{fraction:03d}".rstrip("0") if fraction else "")


@dataclass(frozen=True)
class Passage:
    """A stretch of a file, from ``start_s`` to ``end_s`` seconds."""

    start_s: float
    end_s: float

    @classmethod
    def parse(cls, text: str, *, min_duration_s: float = 0.0) -> "Passage":
        """``"0:00-0:05"`` → ``Passage(0.0, 5.0)``.

        Raises:
            ValueError: not ``START-END``, a bad time, an end not after the start, or shorter than
                ``min_duration_s``; the message names ``text``.
        """
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"{text!r} is not a passage START-END (e.g. 0:00-0:05 or 12.5-20)")
        start_s, end_s = (parse_time_s(part) for part in parts)
        if end_s - start_s < max(min_duration_s, 1e-3):
            raise ValueError(f"{text!r} is {end_s - start_s:g} s long; the passage must run forwards, over at least "
                             f"{max(min_duration_s, 1e-3):g} s")
        return cls(start_s, end_s)

    def frames(self, sample_rate: int) -> tuple[int, int]:
        """The passage at ``sample_rate``: ``(first frame, frame count)``."""
        first = round(self.start_s * sample_rate)
        return first, round(self.end_s * sample_rate) - first

    def __str__(self) -> str:
        return f"{format_time(self.start_s)}-{format_time(self.end_s)}"


def noise_passage(text: str) -> Passage:
    """An ``argparse`` type: a passage long enough to measure a noise floor on."""
    from cassette_denoise.defaults import MIN_NOISE_CLIP_S

    try:
        return Passage.parse(text, min_duration_s=MIN_NOISE_CLIP_S)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
