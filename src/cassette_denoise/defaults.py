"""Defaults and choices that the command line shows in ``--help``, in a module that imports nothing heavy.

``cassette-denoise --help`` and argument errors must answer without loading torch, numpy or matplotlib,
so the values a parser needs live here; the modules that use them import them from here too, except the
preset names, which :mod:`cassette_denoise.simulate.cassette` defines with their settings (a test checks
that the two lists agree).
"""

from __future__ import annotations

from pathlib import Path

#: Most attenuation any time-frequency bin gets. Chosen on the validation split (benchmarks/strength.py, with
#: the bundled network trained on the ``training`` preset) as the lowest strength within 0.05 dB of the best mean
#: SI-SDR gain; benchmarks/results/strength.json has the figures.
DEFAULT_STRENGTH_DB = 30.0
#: The General MIDI sound font that Debian's fluid-soundfont-gm installs.
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
#: The names of :data:`cassette_denoise.simulate.PRESETS`, in its order.
PRESET_NAMES = ("random", "training", "good-deck-type-ii", "walkman-ferric", "worn-tape", "dolby-b-undecoded")
#: Shortest clip a noise floor is measured on (``--noise-sample``, ``--noise-from``): 1 s is 86 frames at the
#: model rate, so its floor (each bin's 10 % quantile, ``spectral.noise_floor``) is the 9th lowest of 86 or
#: more frames, not one frame's chance dip.
MIN_NOISE_CLIP_S = 1.0
#: The model's arithmetic (``Denoiser(precision=...)``, ``--precision``): ``auto`` is bfloat16 where the CPU
#: computes it natively, float32 elsewhere (see :mod:`cassette_denoise.precision`).
PRECISIONS = ("auto", "float32", "bfloat16")
