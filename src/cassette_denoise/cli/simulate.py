"""``cassette-denoise simulate``: make a recording sound like a compact cassette.

The simulation runs at the input's own sample rate (every effect is specified in Hz and seconds), so
the output keeps the input's rate and channels without a resampling round trip.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from cassette_denoise.cli import EXIT_OK, CommandError
from cassette_denoise.defaults import PRESET_NAMES

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="make a recording sound like a compact cassette",
        description=(
            "Play a recording through a simulated cassette: hiss, hum, rumble, wow and flutter, "
            "high-frequency loss and the rest. The same --seed gives byte-identical files "
            "(for WAV, FLAC and AIFF output)."
        ),
    )
    parser.add_argument("input", type=Path, metavar="IN", help="audio file to degrade")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="where to write the cassette version")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="random",
                        help="kind of tape and deck (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--target-out", type=Path, metavar="PATH",
                        help="also write the noise-free target (the music through the tape's signal path)")
    parser.add_argument("--params-out", type=Path, metavar="PATH.json",
                        help="also write the drawn simulator parameters as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cassette_denoise.audio import atomic_write, probe, read_audio, write_audio
    from cassette_denoise.corpus.pairs import headroom_gain
    from cassette_denoise.simulate import params_to_json, simulate

    outputs = [path for path in (args.output, args.target_out, args.params_out) if path is not None]
    for path in outputs:
        if _same_file(path, args.input):
            raise CommandError(f"{path}: is the input file; choose another output")
    if len({path.resolve() for path in outputs}) < len(outputs):
        raise CommandError("-o, --target-out and --params-out must be different files")
    for path in outputs:
        if path.is_dir() or (path.exists() and not path.is_file()):
            raise CommandError(f"{path}: not a regular file; give a file name")
        if path.exists() and not args.overwrite:
            raise CommandError(f"{path}: exists (use --overwrite to replace it)")
        if not path.parent.is_dir():
            raise CommandError(f"{path}: output folder {path.parent} does not exist")

    info = probe(args.input)
    audio, sample_rate = read_audio(args.input)
    result = simulate(audio, sample_rate, rng=np.random.default_rng(args.seed), preset=args.preset)
    gain = headroom_gain(result.noisy, result.target)
    if gain < 1.0:
        logger.warning("attenuating by %.1f dB to avoid clipping", -20 * np.log10(gain))
    for path, audio_out in ((args.output, result.noisy), (args.target_out, result.target)):
        if path is not None:
            # Keep the input's sample format where the container stays the same (24-bit WAV in, 24-bit out).
            subtype = info.subtype if path.suffix.lower() == args.input.suffix.lower() else None
            write_audio(path, audio_out * np.float32(gain), sample_rate, subtype=subtype)
    if args.params_out is not None:
        record = {
            "preset": args.preset, "seed": args.seed, "sample_rate": sample_rate,
            "gain_db": float(20 * np.log10(gain)), "params": params_to_json(result.params),
        }
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(args.params_out, lambda temp: temp.write_text(text, encoding="utf-8"))
    return EXIT_OK


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)
