"""What the corpus tests share: skips for the optional tools, and test files with a known level."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cassette_denoise.audio import write_audio
from cassette_denoise.corpus import render

try:
    import music21
except ImportError:  # the [train] extra; tests of the user's own music run without it
    music21 = None

needs_music21 = pytest.mark.skipif(music21 is None, reason="needs music21 (pip install 'cassette-denoise[train]')")

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not render.DEFAULT_SOUNDFONT.is_file(),
    reason="needs the fluidsynth program and the FluidR3 sound font (apt install fluidsynth fluid-soundfont-gm)",
)


def peak_dbfs(audio: np.ndarray) -> float:
    return 20 * np.log10(np.abs(audio).max())


def tone_file(path: Path, *, seconds: float, sample_rate: int, silence_s: float = 0.0) -> np.ndarray:
    """A mono tone with digital silence either side; returns what was written, ``(1, samples)``."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    pad = np.zeros(int(silence_s * sample_rate))
    audio = np.concatenate([pad, tone, pad])[None].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, audio, sample_rate)
    return audio
