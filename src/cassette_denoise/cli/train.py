"""``cassette-denoise train --config FILE [--resume]``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cassette_denoise.cli import EXIT_OK

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
    from tqdm import tqdm

    from cassette_denoise.training import TrainConfig, train

    config = TrainConfig.from_toml(args.config, corpus_dir=args.corpus_dir, run_dir=args.run_dir, device=args.device,
                                   max_steps=args.max_steps, max_minutes=args.max_minutes)
    # Under torchrun only rank 0 reports steps, so only it draws a bar.
    bar = tqdm(total=config.max_steps, unit="step", desc="train", dynamic_ncols=True,
               disable=os.environ.get("RANK", "0") != "0")
    recent: list[float] = []
    last_report = time.monotonic()

    def on_step(step: int, loss: float) -> None:
        nonlocal last_report
        recent.append(loss)
        bar.update(step - bar.n)
        if time.monotonic() - last_report >= LOSS_REPORT_EVERY_S:
            bar.write(f"step {step:6d}  loss {sum(recent) / len(recent):.4f}", file=sys.stderr)
            recent.clear()
            last_report = time.monotonic()

    def on_validation(step: int, row: dict) -> None:
        bar.write(f"step {step:6d}  loss {row['train_loss']:.4f}  val SI-SDR {row['val_si_sdr_db']:6.2f} dB "
                  f"(+{row['val_si_sdr_improvement_db']:.2f})  LSDf80 {row['val_lsd_f80_db']:.2f} dB  "
                  f"gain {row['val_gain_db']:+.2f} dB", file=sys.stderr)

    with bar:
        state = train(config, resume=args.resume, on_step=on_step, on_validation=on_validation)
    print(f"stopped at step {state['step']}; best validation SI-SDR {state['best_val_si_sdr_db']:.2f} dB; "
          f"weights in {config.run_dir}/best.safetensors")
    return EXIT_OK
