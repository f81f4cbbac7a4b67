"""``cassette-denoise batch SRC... --out-dir DST [--workers N | --scheduler ADDRESS]``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cassette_denoise.cli import EXIT_FAILED, EXIT_OK, CommandError
from cassette_denoise.cli import messages
from cassette_denoise.cli.denoise import add_denoise_options, check_options, plan_jobs
from cassette_denoise.cli.passage import noise_passage


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="denoise an archive on a Dask cluster, resumably, with a per-tape report",
        description="Denoise audio files and folders into --out-dir on Dask workers, one task per file (long files "
                    "stream, so worker memory stays flat). A manifest (DST/manifest.sqlite) records every file; a "
                    "re-run skips what is done with the same input and settings and does the rest. At the end "
                    "DST/report/ holds report.csv and index.html, the tapes that need a listen first.",
    )
    parser.add_argument("inputs", nargs="+", metavar="SRC", help="audio files or folders")
    parser.add_argument("--out-dir", required=True, help="output folder; input folders are mirrored inside it")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                         help="worker processes of a local cluster (default: the CPU cores, at most 8)")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="use the running Dask cluster at ADDRESS (e.g. tcp://host:8786); every worker must "
                              "see the inputs, DST and --model under the same paths")
    add_denoise_options(parser)
    parser.add_argument("--noise-from", metavar="START-END", type=noise_passage,
                        help="take each tape's noise floor from this passage of it, e.g. its lead-in 0:00-0:05 "
                             "(seconds, m:ss or h:mm:ss); a tape shorter than that fails on its own")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Dask reads its configuration on import and passes it to the worker processes: its routine start/stop
    # lines would bury the progress bar.
    if not args.verbose:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from tqdm import tqdm

    from cassette_denoise.batch.run import Batch, BatchError, connect
    from cassette_denoise.batch.worker import Settings, model_sha256

    check_options(args)
    jobs, errors = plan_jobs(args.inputs, output=None, out_dir=args.out_dir)
    for line in errors:
        messages.error(line)
    model = os.path.abspath(args.model) if args.model else None
    if model and not os.path.isfile(model):
        raise CommandError(f"--model {args.model}: no such file")
    passage = args.noise_from
    settings = Settings(strength_db=args.strength_db, remove_hum=not args.keep_hum, subtype=args.subtype,
                        model_path=model, model_sha256=model_sha256(model), device=args.device,
                        precision=args.precision, remove_whine=not args.keep_whine, noise_from_s=None if passage is None else (passage.start_s, passage.end_s))
    try:
        batch = Batch(args.out_dir, settings=settings)
    except BatchError as error:
        raise CommandError(str(error)) from None
    with batch:
        plan = batch.plan(jobs, overwrite=args.overwrite)
        if plan.foreign:
            print(f"skipping {len(plan.foreign)} file(s) whose output exists but is not in the manifest "
                  f"(use --overwrite to replace), e.g. {plan.foreign[0]}", file=sys.stderr)
        print(f"{len(plan.pending)} file(s) to denoise, {plan.up_to_date} already done", file=sys.stderr)
        started, done, failed = time.perf_counter(), 0, 0
        if plan.pending:
            with connect(workers=None if args.scheduler else args.workers, scheduler=args.scheduler) as client, \
                    tqdm(total=round(plan.audio_s / 3600, 4), unit="h", desc="hours of audio", disable=None,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} h "
                                    "[{elapsed}<{remaining}{postfix}]") as bar:
                for item, outcome in batch.run(client, plan):
                    bar.update(round(item.duration_s / 3600, 4))
                    if outcome.error is None:
                        done += 1
                    else:
                        failed += 1
                        messages.error(outcome.error, write=tqdm.write)
                    bar.set_postfix_str(f"{done + failed}/{len(plan.pending)} files, {failed} failed", refresh=False)
        csv_path, html_path = batch.write_report()
        counts = batch.manifest.counts()
    elapsed = time.perf_counter() - started
    print(f"{done} file(s) done and {failed} failed in {elapsed:.1f} s; manifest: "
          f"{counts['done']} done, {counts['failed']} failed; report: {html_path}", file=sys.stderr)
    return EXIT_FAILED if errors or counts["failed"] else EXIT_OK
