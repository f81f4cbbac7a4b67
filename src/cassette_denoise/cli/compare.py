"""``cassette-denoise compare``: spectrograms of noisy, denoised, clean and what was removed, in one picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cassette_denoise.cli import EXIT_OK, CommandError, messages


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="picture comparing noisy, denoised and clean spectrograms",
        description="Draw the spectrograms of a noisy file, its denoised version, the clean reference (optional) "
        "and the removed part (noisy - denoised) on one dB scale.",
    )
    parser.add_argument("noisy", type=Path, help="noisy recording")
    parser.add_argument("denoised", type=Path, help="its denoised version")
    parser.add_argument("--clean", type=Path, help="clean reference")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="PNG", help="picture to write")
    parser.add_argument("--dpi", type=int, default=110, help="resolution of the picture")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.dpi < 10 or args.dpi > 1200:
        raise CommandError(f"--dpi must be between 10 and 1200, got {args.dpi}")
    if args.output.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise CommandError(f"{args.output}: unsupported picture format {args.output.suffix!r} (png, pdf, svg, jpg)")

    from cassette_denoise.audio import atomic_write, read_audio, read_resampled
    from cassette_denoise.plots import plot_comparison

    if not args.output.parent.is_dir():
        raise CommandError(f"{args.output}: output folder {args.output.parent} does not exist")
    noisy, sample_rate = read_audio(args.noisy)
    # Bring everything to the noisy file's rate and the shortest length so that panels line up.
    others = [read_resampled(path, sample_rate=sample_rate)[0] for path in (args.denoised, args.clean) if path is not None]
    length = min(audio.shape[1] for audio in [noisy, *others])
    for path, audio in zip([args.noisy, args.denoised, args.clean], [noisy, *others]):
        if audio.shape[1] > length:
            print(messages.printable(f"cassette-denoise compare: note: {path} is {audio.shape[1] - length} samples "
                                     f"longer than the shortest file; drawing the first {length} samples of each"),
                  file=sys.stderr)
    noisy, denoised, *clean = (audio[:, :length] for audio in [noisy, *others])
    if denoised.shape[0] != noisy.shape[0]:
        raise CommandError(f"{args.denoised}: {denoised.shape[0]} channels, {args.noisy} has {noisy.shape[0]}")
    figure = plot_comparison(noisy, denoised, sample_rate, clean=clean[0] if clean else None)
    image_format = args.output.suffix.lstrip(".").lower()
    atomic_write(args.output, lambda temp: figure.savefig(temp, dpi=args.dpi, format=image_format))
    print(messages.printable(f"wrote {args.output}"))
    return EXIT_OK
