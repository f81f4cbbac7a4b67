"""``cassette-denoise denoise INPUT... (-o OUTPUT | --out-dir DIR)``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cassette_denoise.audio import AudioError, find_audio_files, probe, remove_stale_partials
from cassette_denoise.cli import EXIT_FAILED, EXIT_OK, CommandError


@dataclass(frozen=True)
class Job:
    source: Path
    destination: Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "denoise", help="remove tape noise from audio files or folders",
        description="Denoise audio files (WAV, FLAC, OGG, MP3, ... at 8-192 kHz, 1-8 channels). Folders are "
                    "searched recursively and mirrored under --out-dir. Outputs keep the input's rate, channels, "
                    "format and subtype. Existing outputs are skipped unless --overwrite.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--output", help="output file (one input file only)")
    target.add_argument("--out-dir", help="output folder; input folders are mirrored inside it")
    add_denoise_options(parser)
    parser.set_defaults(run=run)


def add_denoise_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to denoise and whether to replace outputs (shared with ``batch``)."""
    from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB

    parser.add_argument("--strength-db", type=float, default=DEFAULT_STRENGTH_DB,
                        help=f"maximum attenuation in dB; lower keeps more natural hiss (default {DEFAULT_STRENGTH_DB:g})")
    parser.add_argument("--keep-hum", action="store_true",
                        help="skip the mains-hum stage (50/60 Hz harmonics that hold for seconds are subtracted by default)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--subtype", help="output subtype, e.g. PCM_16, PCM_24, FLOAT (default: the input's). "
                                          "Integer subtypes clip samples beyond full scale (reported); FLOAT keeps them")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--model", help="a .safetensors checkpoint (default: the bundled model)")


def plan_jobs(inputs: list[str], *, output: str | None, out_dir: str | None) -> tuple[list[Job], list[str]]:
    """Pair every input file with its output path; returns the jobs and one error line per bad input."""
    jobs, errors = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            files = find_audio_files(item)
            if not files:
                errors.append(f"{item}: folder contains no audio files")
            root = Path(out_dir) / item.resolve().name if out_dir else None
            jobs += [Job(file, root / file.relative_to(item)) for file in files]
        elif not item.exists():
            errors.append(f"{item}: no such file")
        else:
            jobs.append(Job(item, Path(output) if output else Path(out_dir) / item.name))
    if output and len(jobs) + len(errors) > 1:
        raise CommandError("-o/--output takes exactly one input file; use --out-dir for several")
    return jobs, errors


def run(args: argparse.Namespace) -> int:
    from cassette_denoise.denoiser import Denoiser

    jobs, errors = plan_jobs(args.inputs, output=args.output, out_dir=args.out_dir)
    for line in errors:
        print(f"cassette-denoise: error: {line}", file=sys.stderr)
    if not jobs:
        return EXIT_FAILED

    pending, skipped = [], 0
    for job in jobs:
        if job.destination.exists() and job.destination.resolve() == job.source.resolve():
            errors.append(f"{job.source}: output would overwrite the input")
            print(f"cassette-denoise: error: {errors[-1]}", file=sys.stderr)
        elif job.destination.exists() and not args.overwrite:
            skipped += 1
        else:
            pending.append(job)
    if skipped:
        print(f"skipping {skipped} file(s) whose output exists (use --overwrite to replace)", file=sys.stderr)

    options = {"device": args.device, "remove_hum": not args.keep_hum}
    denoiser = Denoiser.from_checkpoint(args.model, **options) if args.model else Denoiser.from_pretrained(**options)
    sizes = {}
    for job in pending:
        try:
            sizes[job] = probe(job.source).frames
        except AudioError:
            sizes[job] = 0  # reported when the job runs
    started, done, audio_s = time.perf_counter(), 0, 0.0
    with tqdm(total=len(pending), unit="file", desc="all files", position=0, disable=None) as overall:
        for job in pending:
            try:
                job.destination.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_partials(job.destination)
                with tqdm(total=sizes[job], unit="frame", unit_scale=True, desc=job.source.name[:30],
                          position=1, leave=False, disable=None) as bar:
                    result = denoiser.denoise_file(job.source, job.destination, strength_db=args.strength_db,
                                                   subtype=args.subtype, progress=bar.update)
                done += 1
                audio_s += result.duration_s
                if result.clipped_samples:
                    print(f"cassette-denoise: warning: {job.destination}: {result.clipped_samples} samples above "
                          f"full scale clipped (peak {result.peak_dbfs:+.2f} dBFS); use --subtype FLOAT to keep them",
                          file=sys.stderr)
            except (AudioError, OSError, ValueError) as error:
                if logging.getLogger().isEnabledFor(logging.DEBUG):
                    raise
                # AudioError messages already start with the file they are about.
                message = str(error) if isinstance(error, AudioError) else f"{job.source}: {error}"
                errors.append(message)
                tqdm.write(f"cassette-denoise: error: {message}", file=sys.stderr)
            overall.update()

    elapsed = time.perf_counter() - started
    speed = f", {audio_s / elapsed:.1f}x real time" if elapsed > 0 and audio_s else ""
    print(f"denoised {done} file(s), {_duration(audio_s)} of audio in {elapsed:.2f} s{speed}; "
          f"{skipped} skipped, {len(errors)} failed", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
