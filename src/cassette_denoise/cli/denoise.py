"""``cassette-denoise denoise INPUT... (-o OUTPUT | --out-dir DIR)``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cassette_denoise.cli import EXIT_FAILED, EXIT_OK, CommandError, messages
from cassette_denoise.cli.passage import noise_passage


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
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--noise-sample", metavar="FILE",
                       help="a recording of the tape's noise alone (lead-in, a pause; any format and rate, at least "
                            "1 s): the model takes each frequency's noise floor from it instead of estimating it "
                            "from the music")
    noise.add_argument("--noise-from", metavar="START-END", type=noise_passage,
                       help="take the noise floor from this passage of each input, e.g. 0:00-0:05 or 12.5-20 "
                            "(seconds, m:ss or h:mm:ss); an input shorter than that fails")
    parser.set_defaults(run=run)


def add_denoise_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to denoise and whether to replace outputs (shared with ``batch``)."""
    from cassette_denoise.defaults import DEFAULT_STRENGTH_DB, PRECISIONS

    parser.add_argument("--strength-db", type=float, default=DEFAULT_STRENGTH_DB,
                        help=f"maximum attenuation in dB; lower keeps more natural hiss (default {DEFAULT_STRENGTH_DB:g})")
    parser.add_argument("--keep-hum", action="store_true",
                        help="skip the hum stage (by default, hum with a 45-65 Hz fundamental that holds for seconds "
                             "is subtracted with its harmonics)")
    parser.add_argument("--keep-whine", action="store_true",
                        help="skip the whine stage (by default, steady tonal lines at 0.3-5.5 kHz that hold for "
                             "about ten seconds are tracked and subtracted)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--subtype", help="output subtype, e.g. PCM_16, PCM_24, FLOAT (default: the input's). "
                                          "Integer subtypes clip samples beyond full scale (reported); FLOAT keeps them")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the model's arithmetic: auto (default) is bfloat16 where the CPU computes it natively, "
                             "faster, and float32 elsewhere")
    parser.add_argument("--model", help="a .safetensors checkpoint (default: the bundled model)")


def check_options(args: argparse.Namespace) -> None:
    """Every check that needs no input file and no model, so that a usage error costs nothing.

    Raises:
        CommandError: a bad option value, naming it.
    """
    import soundfile as sf

    from cassette_denoise.audio import AUDIO_SUFFIXES, format_for_suffix

    if not 0 <= args.strength_db <= 120:
        raise CommandError(f"--strength-db must be between 0 and 120 dB, got {args.strength_db:g}")
    if "" in args.inputs:
        raise CommandError("an input is an empty string (it would mean the current folder; give '.' for that)")
    if args.device.startswith("cuda"):  # "auto" falls back to the CPU; no need to import torch for it
        from cassette_denoise.denoiser import resolve_device

        try:
            resolve_device(args.device)
        except ValueError as error:
            raise CommandError(str(error)) from None
    target = Path(args.output) if getattr(args, "output", None) else None  # batch has only --out-dir
    if target is not None:
        if target.is_dir():
            raise CommandError(f"-o {target}: is a folder; give a file name, or use --out-dir for a folder")
        if target.exists() and not target.is_file():
            raise CommandError(f"-o {target}: not a regular file")
    elif Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise CommandError(f"--out-dir {args.out_dir}: exists and is not a folder")
    if target is not None and target.suffix.lower() not in AUDIO_SUFFIXES:
        raise CommandError(f"-o {target}: unsupported output format {target.suffix!r} "
                           f"(use one of {sorted(AUDIO_SUFFIXES)})")
    if args.subtype is not None:
        args.subtype = args.subtype.upper()
        if args.subtype not in sf.available_subtypes():
            raise CommandError(f"--subtype {args.subtype}: unknown (e.g. PCM_16, PCM_24, FLOAT; soundfile's "
                               f"available_subtypes() lists them all)")
        if target is not None and not sf.check_format(format_for_suffix(target), args.subtype):
            raise CommandError(f"--subtype {args.subtype}: {target.suffix} files cannot hold it")


def plan_jobs(inputs: list[str], *, output: str | None, out_dir: str | None) -> tuple[list[Job], list[str]]:
    """Pair every input file with its output path; returns the jobs and one error line per bad input.

    Raises:
        CommandError: ``output`` with anything but one input file, or two inputs that would be
            written to the same output (nothing has been touched yet).
    """
    from cassette_denoise.audio import scan_audio_files

    jobs, errors = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            if output:
                raise CommandError(f"{item}: is a folder; -o/--output takes one file, use --out-dir for folders")
            files, problems = scan_audio_files(item, exclude=Path(out_dir))
            errors += problems
            if not files and not problems:
                errors.append(f"{item}: folder contains no audio files")
            root = Path(out_dir) / item.resolve().name
            jobs += [Job(file, root / file.relative_to(item)) for file in files]
        elif not item.exists():
            errors.append(f"{item}: {'broken or looping link' if item.is_symlink() else 'no such file'}")
        elif not item.is_file():
            errors.append(f"{item}: not a regular file; skipped")
        else:
            jobs.append(Job(item, Path(output) if output else Path(out_dir) / item.name))
    if output and len(jobs) + len(errors) > 1:
        raise CommandError("-o/--output takes exactly one input file; use --out-dir for several")
    _refuse_shared_outputs(jobs)
    return jobs, errors


def _refuse_shared_outputs(jobs: list[Job]) -> None:
    by_destination: dict[Path, list[Job]] = {}
    for job in jobs:
        by_destination.setdefault(Path(os.path.abspath(job.destination)), []).append(job)
    clashes = [group for group in by_destination.values() if len({job.source.resolve() for job in group}) > 1]
    if clashes:
        first = clashes[0]
        raise CommandError(f"{len(clashes)} output(s) would be written by more than one input, e.g. "
                           f"{' and '.join(str(job.source) for job in first[:2])} both to {first[0].destination}; "
                           f"denoise them into different --out-dir folders")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    check_options(args)
    noise_clip = _read_noise_sample(args.noise_sample) if args.noise_sample else None
    jobs, errors = plan_jobs(args.inputs, output=args.output, out_dir=args.out_dir)
    jobs = _unique(jobs)
    for line in errors:
        messages.error(line)
    if not jobs:
        return EXIT_FAILED

    pending, skipped = [], 0
    for job in jobs:
        if job.destination.exists() and job.destination.resolve() == job.source.resolve():
            errors.append(f"{job.source}: output would overwrite the input")
            messages.error(errors[-1])
        elif job.destination.exists() and not args.overwrite:
            skipped += 1
        else:
            pending.append(job)
    if skipped:
        print(f"skipping {skipped} file(s) whose output exists (use --overwrite to replace)", file=sys.stderr)
    if not pending:
        return _summary(0, 0.0, 0.0, skipped, errors)

    denoiser = _load_denoiser(args)
    noise_floor = _given_noise_floor(denoiser, args, noise_clip)
    started, done, audio_s = time.perf_counter(), 0, 0.0
    with tqdm(total=len(pending), unit="file", desc="all files", position=0, disable=None) as overall:
        for job in pending:
            result = _denoise_one(denoiser, job, args, errors, noise_floor=noise_floor)
            if result is not None:
                done += 1
                audio_s += result.duration_s
            overall.update()
    return _summary(done, audio_s, time.perf_counter() - started, skipped, errors)


def _load_denoiser(args: argparse.Namespace):
    """The model, before any output folder is made: a bad ``--model`` is a usage error (exit 2)."""
    from cassette_denoise.checkpoint import CheckpointError
    from cassette_denoise.denoiser import Denoiser

    options = {"device": args.device, "remove_hum": not args.keep_hum, "remove_whine": not args.keep_whine,
               "precision": args.precision}
    try:
        return Denoiser.from_pretrained(args.model, **options)
    except CheckpointError as error:
        raise CommandError(f"--model: {error}") from None


def _read_noise_sample(path: str):
    """``--noise-sample``'s audio and rate, read and checked before any input is touched.

    Raises:
        CommandError: unreadable, too short, silent, ..., naming the file.
    """
    from cassette_denoise.audio import AudioError, read_audio
    from cassette_denoise.validate import check_noise_clip

    try:
        audio, sample_rate = read_audio(path)
        return check_noise_clip(audio, sample_rate), sample_rate
    except AudioError as error:
        raise CommandError(f"--noise-sample: {error}") from None
    except ValueError as error:
        raise CommandError(f"--noise-sample {path}: {error}") from None


def _given_noise_floor(denoiser, args: argparse.Namespace, noise_clip):
    """The floor measured on ``--noise-sample`` (None without it), once the model is known to take one."""
    if (args.noise_sample or args.noise_from) and not denoiser.model.config.noise_floor_input:
        option = "--noise-sample" if args.noise_sample else "--noise-from"
        raise CommandError(f"{option}: the model {args.model or '(bundled)'} has no noise-floor input, so it cannot "
                           f"use a given noise floor")
    return None if noise_clip is None else denoiser.noise_floor(*noise_clip)


def _denoise_one(denoiser, job: Job, args: argparse.Namespace, errors: list[str], *, noise_floor=None):
    """Denoise one job; on failure, report it once, add it to ``errors`` and return None."""
    from tqdm import tqdm

    from cassette_denoise.audio import AudioError, probe, remove_stale_partials
    from cassette_denoise.front import passage_noise_floor

    try:
        info = probe(job.source)
        if args.noise_from is not None:
            noise_floor = passage_noise_floor(job.source, start_s=args.noise_from.start_s, end_s=args.noise_from.end_s,
                                              remove_hum=denoiser.remove_hum, remove_whine=denoiser.remove_whine,
                                              what=f"--noise-from {args.noise_from}")
        job.destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(job.destination)
        with tqdm(total=info.frames, unit="frame", unit_scale=True, desc=messages.printable(job.source.name[:30]),
                  position=1, leave=False, disable=None) as bar:
            result = denoiser.denoise_file(job.source, job.destination, strength_db=args.strength_db,
                                           subtype=args.subtype, progress=bar.update, noise_floor=noise_floor)
    except (AudioError, OSError, ValueError) as error:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        # AudioError messages already start with the file they are about.
        errors.append(str(error) if isinstance(error, AudioError) else f"{job.source}: {error}")
        messages.error(errors[-1], write=tqdm.write)
        return None
    if result.clipped_samples:
        tqdm.write(messages.printable(
            f"cassette-denoise: warning: {job.destination}: {result.clipped_samples} samples above full scale "
            f"clipped (peak {result.peak_dbfs:+.2f} dBFS); use --subtype FLOAT to keep them"), file=sys.stderr)
    return result


def _unique(jobs: list[Job]) -> list[Job]:
    """The same file given twice (``a.wav a.wav``, or a folder and a file in it) is done once."""
    seen, unique = set(), []
    for job in jobs:
        if (key := (job.source.resolve(), Path(os.path.abspath(job.destination)))) not in seen:
            seen.add(key)
            unique.append(job)
    return unique


def _summary(done: int, audio_s: float, elapsed: float, skipped: int, errors: list[str]) -> int:
    speed = f", {audio_s / elapsed:.1f}x real time" if elapsed > 0 and audio_s else ""
    print(f"denoised {done} file(s), {_duration(audio_s)} of audio in {elapsed:.2f} s{speed}; "
          f"{skipped} skipped, {len(errors)} failed", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
