"""``cassette-denoise evaluate``: score the input, our model and other denoisers against clean references."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cassette_denoise.cli import EXIT_FAILED, EXIT_OK, CommandError, messages

if TYPE_CHECKING:
    from cassette_denoise import evaluate

COLUMNS = (("SI-SDR dB", "si_sdr_db"), ("LSD dB", "lsd_db"), ("LSDf80 dB", "lsd_f80_db"), ("segSNR dB", "seg_snr_db"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score denoising against clean references",
        description="Score the untouched input, our model, other denoisers and given denoised files against a "
        "clean reference (SI-SDR, LSD, LSDf80, segSNR).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--noisy", type=Path, help="noisy recording (needs --clean)")
    source.add_argument("--pairs", type=Path, metavar="DIR", help="folder written by make-pairs")
    parser.add_argument("--clean", type=Path, help="clean reference for --noisy")
    parser.add_argument("--denoised", type=Path, action="append", default=[], metavar="FILE",
                        help="an already denoised version of --noisy to score too (repeatable)")
    parser.add_argument("--model", help="a .safetensors checkpoint to score as ours (default: the bundled model)")
    parser.add_argument("--strengths-db", type=_strengths, metavar="DB,DB,...",
                        help="strengths to run our model at (default: half, once and twice its default)")
    parser.add_argument("--no-peers", action="store_true", help="skip the other denoisers (noisereduce, sox, ffmpeg)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write the rows as CSV")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cassette_denoise import evaluate
    from cassette_denoise.audio import AudioError

    if args.noisy is not None:
        if args.clean is None:
            raise CommandError("--noisy needs --clean")
        pairs = [evaluate.Pair(args.noisy.name, args.noisy, args.clean)]
    else:
        if args.clean is not None or args.denoised:
            raise CommandError("--clean and --denoised go with --noisy, not --pairs")
        pairs = evaluate.load_pairs(args.pairs)

    if args.strengths_db is not None and not all(0 <= strength <= 120 for strength in args.strengths_db):
        raise CommandError(f"--strengths-db must each be between 0 and 120 dB, got {args.strengths_db}")
    methods = evaluate.our_methods(strengths_db=args.strengths_db, model_path=args.model)
    if args.model and isinstance(methods[0], evaluate.Skipped):
        raise CommandError(f"--model: {methods[0].reason}")
    if not args.no_peers:
        methods += evaluate.peer_methods()

    rows, failures = [], 0
    for pair in tqdm(pairs, unit="pair", desc="evaluating", disable=None if len(pairs) > 1 else True):
        try:
            rows += evaluate.evaluate_pair(pair, methods=methods, denoised=args.denoised)
        except AudioError as error:
            if len(pairs) == 1:
                raise
            tqdm.write(messages.printable(f"cassette-denoise evaluate: skipping {pair.name}: {error}"), file=sys.stderr)
            failures += 1
    if len(pairs) > 1:
        rows_shown = rows + evaluate.mean_rows(rows, label=f"mean of {len(pairs) - failures}")
    else:
        rows_shown = rows
    print(format_table(rows_shown))
    if args.json:
        evaluate.write_json(rows, args.json)
    if args.csv:
        evaluate.write_csv(rows, args.csv)
    return EXIT_FAILED if failures else EXIT_OK


def format_table(rows: list[evaluate.Row]) -> str:
    """A plain-text table: one line per row, skipped rows with their reason."""
    header = ["file", "method", *(title for title, _ in COLUMNS), "time s"]
    lines = []
    for row in rows:
        if row.metrics is None:
            lines.append([row.file, row.method, f"skipped: {row.skipped}"])
            continue
        seconds = "" if row.seconds is None else f"{row.seconds:.1f}"
        lines.append([row.file, row.method, *(f"{row.metrics[key]:.2f}" for _, key in COLUMNS), seconds])
    widths = [max(len(line[i]) for line in [header, *lines] if i < len(line) and len(line) == len(header))
              for i in range(len(header))]

    def render(line: list[str]) -> str:
        if len(line) < len(header):  # a skipped row: its reason runs across the metric columns
            return "  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]), line[2]]).rstrip()
        cells = [cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([render(header), *map(render, lines)])


def _strengths(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in dB, got {text!r}") from None
