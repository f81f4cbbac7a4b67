"""``cassette-denoise train --config FILE [--resume]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cassette_denoise.cli import EXIT_OK, CommandError

#: The loss is written out at least this often, so a log of the run shows it moving.
LOSS_REPORT_EVERY_S = 60.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a mask model on clean music + simulated/recorded tape noise",
        description="Train the U-Net. Multi-GPU/multi-process: torchrun --nproc_per_node N -m cassette_denoise train ...",
    )
    parser.add_argument("--config", required=True, help="TOML file with TrainConfig settings (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/latest if present")
    parser.add_argument("--corpus-dir", help="override corpus_dir from the config")
    parser.add_argument("--run-dir", help="override run_dir from the config")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device from the config")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly after this much wall time")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cassette_denoise.training import TrainConfig, train

    config = TrainConfig.from_toml(args.config, corpus_dir=args.corpus_dir, run_dir=args.run_dir, device=args.device,
                                   max_steps=args.max_steps, max_minutes=args.max_minutes)
    if not Path(config.corpus_dir).is_dir():
        raise CommandError(f"{config.corpus_dir}: corpus folder not found (build one with `cassette-denoise corpus`)")
    progress = _Progress(total_steps=config.max_steps)
    try:
        state = train(config, resume=args.resume, on_step=progress.step, on_validation=progress.validation)
    finally:
        progress.close()
    print(f"stopped at step {state['step']}; best validation SI-SDR {state['best_val_si_sdr_db']:.2f} dB; "
          f"weights in {config.run_dir}/best.safetensors")
    return EXIT_OK


class _Progress:
    """A progress bar with ETA once steps run, the mean loss at least every minute, and each validation's
    scores, all on stderr. Under torchrun only rank 0 reports steps, so only it draws."""

    def __init__(self, *, total_steps: int):
        self.total_steps = total_steps
        self.bar = None
        self.losses: list[float] = []
        self.last_report = time.monotonic()

    def step(self, step: int, loss: float) -> None:
        from tqdm import tqdm

        if self.bar is None:  # created here, so a run that fails while loading draws no empty bar
            self.bar = tqdm(total=self.total_steps, initial=step - 1, unit="step", desc="train", dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        self.losses.append(loss)
        if time.monotonic() - self.last_report >= LOSS_REPORT_EVERY_S:
            self.bar.write(f"step {step:6d}  loss {sum(self.losses) / len(self.losses):.4f}", file=sys.stderr)
            self.losses.clear()
            self.last_report = time.monotonic()

    def validation(self, step: int, row: dict) -> None:
        line = (f"step {step:6d}  loss {row['train_loss']:.4f}  val SI-SDR {row['val_si_sdr_db']:6.2f} dB "
                f"(+{row['val_si_sdr_improvement_db']:.2f})  LSDf80 {row['val_lsd_f80_db']:.2f} dB  "
                f"gain {row['val_gain_db']:+.2f} dB")
        if self.bar is None:
            print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
