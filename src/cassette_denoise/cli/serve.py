"""``cassette-denoise serve``: the listening page on a local web server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import webbrowser

from cassette_denoise.cli import EXIT_OK, CommandError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_MAX_UPLOAD_MB = 2048.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="open a local web page to hear before/after and choose a strength",
        description="Start a local web page: drop audio files, hear the input, the output and what was removed at "
                    "the same position, change strength and the hum stage live, and download the result (the same "
                    "file `denoise` writes with those settings). Uploads live in a private temporary folder "
                    "removed on exit.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--model", help="a .safetensors checkpoint (default: the bundled model)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest file accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--workers", type=int, default=None,
                        help="files denoised at once (default: one per CPU core)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from cassette_denoise.denoiser import Denoiser
    from cassette_denoise.serve.app import create_app

    if not 1 <= args.port <= 65535:
        raise CommandError(f"--port must be 1-65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise CommandError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    workers = args.workers or os.cpu_count() or 1
    if workers < 1:
        raise CommandError(f"--workers must be at least 1, got {workers}")
    if (warning := host_warning(args.host)) is not None:
        print(f"cassette-denoise serve: warning: {warning}", file=sys.stderr)
    # One denoise per core: each worker's network gets its share of the cores, not all of them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    options = {"device": args.device}
    denoiser = Denoiser.from_pretrained(args.model, **options)
    app = create_app(denoiser, max_upload_mb=args.max_upload_mb, workers=workers)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else host}:{args.port}/"
    print(f"cassette-denoise serve: {url} (Ctrl+C stops and removes the uploads)", file=sys.stderr)
    if not args.no_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    log_level = "info" if logging.getLogger().isEnabledFor(logging.DEBUG) else "warning"
    uvicorn.run(app, host=args.host, port=args.port, log_level=log_level)
    return EXIT_OK


def host_warning(host: str) -> str | None:
    """Why listening on ``host`` is unsafe, or None for this computer's own addresses."""
    if host in LOCAL_HOSTS:
        return None
    return f"listening on {host}: anyone who can reach this computer can upload files and use its processors"
