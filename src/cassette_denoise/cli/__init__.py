"""Command line: ``cassette-denoise COMMAND ...``.

Each command lives in its own module with ``register(subparsers)``, which adds its parser and sets
``run=function(args) -> exit code``. This layer only parses arguments, calls library functions and
turns exceptions into one-line messages and exit codes:

0 success, 1 some input failed (the others were done), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cassette_denoise import __version__, threads

COMMAND_MODULES = ("denoise", "batch", "serve", "simulate", "make_pairs", "corpus", "evaluate", "compare", "train", "adapt")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Commands that run the model; each gets ``--threads`` (a name missing from this build is passed over).
MODEL_COMMANDS = ("denoise", "evaluate", "serve", "batch", "adapt")


class CommandError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def build_parser(*, only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` just that command's (its module may import heavy libraries)."""
    parser = argparse.ArgumentParser(
        prog="cassette-denoise",
        description="Remove compact-cassette hiss, hum and rumble from digitised tapes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"cassette_denoise.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"cassette_denoise.cli.{name}":
                continue  # command not part of this build
            raise
        module.register(subparsers)
        if name in MODEL_COMMANDS:
            _add_threads_option(subparsers.choices[name])
    return parser


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=_thread_count, metavar="N",
        help="CPU threads for the model (default: $OMP_NUM_THREADS if set, else one per physical core this "
             f"process may use, at most {threads.MAX_DEFAULT_THREADS}); idle threads sleep unless "
             "$OMP_WAIT_POLICY says otherwise",
    )


def _thread_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # First of all, before any command can import torch: OpenMP reads its wait policy once, when it loads.
    threads.use_passive_waiting()
    # Import only the command being run: scipy, matplotlib and friends cost ~100 MB of memory that
    # `denoise` does not need.
    first = next((arg for arg in argv if not arg.startswith("-")), "").replace("-", "_")
    parser = build_parser(only=first if first in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        if args.command in MODEL_COMMANDS:  # before the command's first torch operation
            threads.configure_threads(args.threads)
        return int(args.run(args))
    except KeyboardInterrupt:
        print("cassette-denoise: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the one place that turns any failure into a one-line message
        if args.verbose:
            raise
        from cassette_denoise.cli.messages import printable

        print(f"cassette-denoise {args.command}: error: {printable(str(error))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, CommandError) else EXIT_FAILED
