"""Lines for the terminal: file names as the OS gives them can hold anything."""

from __future__ import annotations

import sys


def printable(text: str) -> str:
    """``text`` with bytes that are not UTF-8 shown as ``\\xNN`` and control characters (newlines,
    terminal escapes) as their escape sequences, so a file name can neither break a message into
    several lines nor drive the terminal."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def error(message: str, *, write=None) -> None:
    """Print ``cassette-denoise: error: message`` on stderr (through ``write``, e.g. ``tqdm.write``, if given)."""
    line = f"cassette-denoise: error: {printable(message)}"
    if write is not None:
        write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
