"""``cassette-denoise corpus``: render and decode clean music for training and testing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cassette_denoise.cli import EXIT_FAILED, EXIT_OK, CommandError
from cassette_denoise.defaults import DEFAULT_SOUNDFONT

# Bach chorales carry no tempo mark, so they play at MIDI's 120 bpm (x0.8-1.2): 100 of them measured 61 minutes,
# so 130 make about 80.
DEFAULT_MAX_MUSIC21 = 130
DEFAULT_MAX_TEST_MUSIC21 = 15  # one piece per test composer, each at most 150 s: 20-30 minutes


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "corpus",
        help="render clean training and test music (music21 + FluidSynth, Debian soundtracks, your own files)",
        description=(
            "Build a folder of clean 44.1 kHz stereo FLAC music with manifest.json. Training music: Bach "
            "chorales from music21 rendered through FluidSynth with random instruments, pan, tempo and key, "
            "the Debian packages drascula-music, pushover-data and singularity-music, and --user files "
            "(about 5% of pieces are marked validation). Test music: music21 works by other composers only, "
            "so the two never overlap. Re-running resumes: files already present are kept."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="corpus folder (created if needed)")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="which part to build (default: %(default)s)")
    parser.add_argument("--max-music21", type=int, default=DEFAULT_MAX_MUSIC21, metavar="N",
                        help="Bach chorales to render for training (default: %(default)s)")
    parser.add_argument("--max-test-music21", type=int, default=DEFAULT_MAX_TEST_MUSIC21, metavar="N",
                        help="test pieces to render, taken in turn from each composer (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice (default: %(default)s)")
    parser.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT, metavar="PATH",
                        help="General MIDI sound font (default: %(default)s)")
    parser.add_argument("--user", type=Path, metavar="DIR",
                        help="your own music (any format, searched recursively), added to training")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cassette_denoise.corpus import CorpusError, build_corpus

    if args.max_music21 < 0 or args.max_test_music21 < 0:
        raise CommandError("--max-music21 and --max-test-music21 must be 0 or more")
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"{args.out}: exists and is not a folder")
    if args.user is not None and not args.user.is_dir():
        raise CommandError(f"{args.user}: not a folder")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        manifest = build_corpus(
            args.out, split=args.split, max_music21=args.max_music21, max_test_music21=args.max_test_music21,
            seed=args.seed, soundfont=args.soundfont, user_dir=args.user, progress=progress,
        )
    except CorpusError as error:
        raise CommandError(str(error)) from None

    print(f"{manifest.out_dir}: {len(manifest.entries)} files, {manifest.files_written} new")
    for (split, source), minutes in manifest.minutes().items():
        print(f"  {split:<10} {source:<24} {minutes:7.1f} min")
    for skipped in manifest.skipped:
        print(f"skipped {skipped.source}/{skipped.name}: {skipped.reason}", file=sys.stderr)
    # The user's own files were asked for by name; a music21 piece that fails is replaced by the next one
    # and a missing Debian package is only a warning.
    user_failed = any(skipped.source == "user" for skipped in manifest.skipped)
    return EXIT_FAILED if user_failed else EXIT_OK
