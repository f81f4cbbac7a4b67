"""``cassette-denoise adapt BLANK [MORE ...] -o my-deck.safetensors``."""

from __future__ import annotations

import argparse
import sys
import time

from cassette_denoise.cli import EXIT_OK, CommandError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt", help="fine-tune the model to your deck from a recording of its blank tape",
        description="Teach the model your deck's noise: give at least 20 s of blank tape (a lead-in or run-out "
                    "recorded like your transfers; any format, rate and channels). The model is fine-tuned on "
                    "clean music plus that noise, scored before and after on held-out music and the last quarter "
                    "of the noise, and written as a model file for `denoise --model`.",
    )
    parser.add_argument("noise", nargs="+", metavar="BLANK", help="recordings of the tape's noise alone")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL",
                        help="the adapted model, NAME.safetensors (NAME.json is written beside it and the run "
                             "folder NAME.adapt/, which --resume continues)")
    music = parser.add_mutually_exclusive_group()
    music.add_argument("--music", metavar="DIR",
                       help="your own clean music (any format, e.g. CD rips); default: Bach chorales rendered once "
                            "with FluidSynth into ~/.cache/cassette-denoise/adapt-music")
    music.add_argument("--corpus", metavar="DIR", help="a `cassette-denoise corpus` folder")
    parser.add_argument("--model", metavar="PATH", help="the model to start from (default: the bundled model)")
    parser.add_argument("--max-minutes", type=float, default=10.0, metavar="M",
                        help="the whole command ends within this, training and scoring (default: %(default)g)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop training after N steps in all")
    parser.add_argument("--resume", action="store_true", help="continue the run in NAME.adapt/")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed for the examples and the held-out pairs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_minutes <= 0:
        raise CommandError(f"--max-minutes must be more than 0, got {args.max_minutes:g}")
    if args.max_steps is not None and args.max_steps < 1:
        raise CommandError(f"--max-steps must be at least 1, got {args.max_steps}")
    import torch

    from cassette_denoise.adapt import AdaptError, adapt

    progress = _Progress()
    try:
        result = adapt(args.noise, args.output, music_dir=args.music, corpus_dir=args.corpus, model_path=args.model,
                       max_minutes=args.max_minutes, max_steps=args.max_steps, resume=args.resume,
                       threads=torch.get_num_threads(), seed=args.seed, device=args.device,
                       on_stage=progress.stage, on_training=progress.start, on_step=progress.step)
    except AdaptError as error:
        raise CommandError(str(error)) from None
    finally:
        progress.close()
    print("held-out SI-SDR, dB (music never trained on + the last quarter of your noise):")
    print(f"{'input SNR':>10} {'input':>7} {'before':>7} {'after':>7} {'gain':>7}")
    for row in result.scores:
        print(f"{row.snr_db:>7g} dB {row.input_db:7.2f} {row.before_db:7.2f} {row.after_db:7.2f} {row.gain_db:+7.2f}")
    print(f"{result.steps} steps in {result.seconds / 60:.1f} min; model in {result.model_path} "
          f"(use it with `cassette-denoise denoise --model {result.model_path}`)")
    if result.carries_noise_floor:
        print("it carries the noise floor of your blank tape, for tapes recorded at the same level; where a tape "
              "was recorded louder or quieter, give --noise-from a passage of its own noise")
    return EXIT_OK


class _Progress:
    """Stage lines, then a bar over the training time with the step and the loss, on stderr."""

    def __init__(self):
        self.bar = None
        self.started = 0.0

    def stage(self, line: str) -> None:
        self.close()
        print(f"adapt: {line}", file=sys.stderr, flush=True)

    def start(self, seconds: float) -> None:
        from tqdm import tqdm

        self.started = time.monotonic()
        self.bar = tqdm(total=round(seconds), unit="s", desc="train", dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}")

    def step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {step}, loss {loss:.3f}", refresh=False)
            self.bar.update(min(self.bar.total, time.monotonic() - self.started) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
