"""Make the bundled example: a held-out piece rendered with FluidSynth, played through a simulated cassette.

    python examples/make_example.py [--clean-out PATH]    # writes examples/cassette-example.flac

The piece comes from the corpus's *test* split (music21 works by composers the model never trained on),
so the example also shows the model on unseen music. Needs fluidsynth and fluid-soundfont-gm.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from cassette_denoise.audio import MODEL_SAMPLE_RATE, write_audio
from cassette_denoise.corpus import render_score, test_pieces
from cassette_denoise.simulate import simulate

HERE = Path(__file__).resolve().parent
PIECE = "haydn"
SECONDS = 8.0
PRESET = "walkman-ferric"
SEED = 7


def main() -> None:
    import music21

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean-out", type=Path, help="also write the clean target (not shipped: the repo keeps ≤ 1 MB)")
    args = parser.parse_args()
    piece = test_pieces()[PIECE][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = music21.corpus.parse(piece.origin)
    clean, _ = render_score(score, rng=np.random.default_rng(SEED), max_duration_s=40.0)
    start = int(4.0 * MODEL_SAMPLE_RATE)  # skip the opening's fade-in
    clean = clean[:, start: start + int(SECONDS * MODEL_SAMPLE_RATE)]
    result = simulate(clean, MODEL_SAMPLE_RATE, rng=np.random.default_rng(SEED), preset=PRESET)
    write_audio(HERE / "cassette-example.flac", result.noisy, MODEL_SAMPLE_RATE, subtype="PCM_16")
    if args.clean_out:
        write_audio(args.clean_out, result.target, MODEL_SAMPLE_RATE, subtype="PCM_16")
    print(f"{piece.origin}: {SECONDS:g} s through '{PRESET}' (seed {SEED}) -> {HERE / 'cassette-example.flac'}")


if __name__ == "__main__":
    main()
