"""``cassette-denoise make-pairs``: write clean/noisy training pairs and their manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from cassette_denoise.cli import EXIT_OK, CommandError
from cassette_denoise.defaults import PRESET_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-pairs",
        help="write clean/noisy training pairs from clean music",
        description=(
            "Cut random excerpts from clean music (resampled to 44.1 kHz) and write each as NNNNN_clean "
            "and NNNNN_noisy, plus manifest.json and manifest.csv. The noisy file adds a blank-tape noise "
            "recording at a random gain (the music level is unchanged) or comes from the cassette "
            "simulator (then the clean file is the music through the tape's signal path). "
            "The same --seed gives the same pairs."
        ),
    )
    parser.add_argument("--clean", required=True, type=Path, metavar="DIR",
                        help="folder of clean music, any format (searched recursively)")
    parser.add_argument("--noise", type=Path, metavar="DIR",
                        help="folder of blank-tape noise recordings; without it every pair is simulated")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--count", required=True, type=int, metavar="N", help="number of pairs")
    parser.add_argument("--seed", required=True, type=int, metavar="S")
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="excerpt length in seconds (default: %(default)s)")
    parser.add_argument("--format", choices=("wav", "flac"), default="wav",
                        help="file format, 24-bit (default: %(default)s)")
    parser.add_argument(
        "--noise-fraction", type=float, default=0.5,
        help="with --noise: share of pairs that use the recordings, the rest are simulated (default: %(default)s)",
    )
    parser.add_argument(
        "--noise-gain-db", type=float, nargs=2, default=(-6.0, 12.0), metavar=("LOW", "HIGH"),
        help="range of the gain applied to the noise recordings (default: -6 12)",
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default="training",
                        help="simulator preset (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cassette_denoise.corpus.pairs import PairFilesConfig, make_pairs

    for option, folder in (("--clean", args.clean), ("--noise", args.noise)):
        if folder is not None and not folder.is_dir():
            raise CommandError(f"{option} {folder}: not a folder")
    try:
        config = PairFilesConfig(count=args.count, seed=args.seed, duration_s=args.duration_s, file_format=args.format,
                                 noise_fraction=args.noise_fraction, noise_gain_db=tuple(args.noise_gain_db),
                                 preset=args.preset)
    except ValueError as error:
        raise CommandError(str(error)) from None
    with tqdm(total=config.count, unit="pair", desc="make-pairs") as bar:
        try:
            examples = make_pairs(args.clean, args.out, config=config, noise_dir=args.noise,
                                  progress=lambda done: bar.update(done - bar.n))
        except ValueError as error:  # e.g. a folder without audio files
            raise CommandError(str(error)) from None
    simulated = sum(example["kind"] == "simulator" for example in examples)
    print(f"wrote {len(examples)} pairs ({simulated} simulated) and manifest.json to {args.out}")
    return EXIT_OK
