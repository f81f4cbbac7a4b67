"""What the network itself costs: one inference tile and one training step, float32 against bfloat16.

For each network shape (the bundled doubling width-8 U-Net; six levels whose width grows 1.5× per level from 8;
the same from 12 with a 2×2 space-to-depth front end, ``UNetConfig.patch``) and each precision, with random
weights (the cost does not depend on them), at ``--threads`` torch threads:

* **inference**: one 512-frame tile of one channel, as the denoiser runs it (``channels_last``, under
  ``torch.inference_mode`` and, for bfloat16, autocast);
* **training**: one optimiser step on a batch of 8 examples of 128 frames, as ``training.loop`` runs it
  (forward under autocast for bfloat16, loss and Adam in float32).

Every (shape, precision, kind) is timed once per round, in turn, for ``--repeats`` rounds after one
warm-up; medians in ``results/network_cost.json``. bfloat16 is only fast where the CPU computes it natively
(``precision.native_bfloat16``, recorded in the results).

    python benchmarks/network_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _common

SHAPES = {
    "doubling, width 8, 5 levels (bundled)": {"base_width": 8, "noise_floor_input": True},
    "growth 1.5, width 8, 6 levels": {"base_width": 8, "levels": 6, "width_growth": 1.5, "noise_floor_input": True},
    "patch 2, growth 1.5, width 12, 6 levels": {"base_width": 12, "levels": 6, "width_growth": 1.5, "patch": 2,
                                                "noise_floor_input": True},
}
PRECISIONS = ("float32", "bfloat16")
BATCH, TRAIN_FRAMES, TILE_FRAMES = 8, 128, 512


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "network_cost.json")
    args = parser.parse_args(argv)

    import torch

    from cassette_denoise.model import UNet, UNetConfig, parameter_count
    from cassette_denoise.precision import native_bfloat16, reduced_precision

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    tile = torch.rand(1, 2, 512, TILE_FRAMES, generator=generator) * 2 - 1
    tile = tile.contiguous(memory_format=torch.channels_last)
    batch = torch.rand(BATCH, 2, 512, TRAIN_FRAMES, generator=generator) * 2 - 1
    target = torch.rand(BATCH, 1, 512, TRAIN_FRAMES, generator=generator)
    models = {name: UNet(UNetConfig(**shape)) for name, shape in SHAPES.items()}
    optimisers = {name: torch.optim.Adam(model.parameters(), lr=1e-5) for name, model in models.items()}

    def infer(name: str, dtype: torch.dtype) -> None:
        model = models[name].eval().to(memory_format=torch.channels_last)
        with torch.inference_mode(), reduced_precision(cpu, dtype):
            model(tile, logits=True)

    def train(name: str, dtype: torch.dtype) -> None:
        model = models[name].train().to(memory_format=torch.contiguous_format)
        with reduced_precision(cpu, dtype):
            logits = model(batch, logits=True).float()
        loss = torch.nn.functional.mse_loss(torch.sigmoid(logits), target)
        optimisers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[name].step()

    cases = [(kind, name, precision)
             for kind in ("inference", "training") for name in SHAPES for precision in PRECISIONS]
    run = {"inference": infer, "training": train}
    times: dict[tuple, list[float]] = {case: [] for case in cases}
    for round_ in range(args.repeats + 1):
        for case in cases:
            kind, name, precision = case
            started = time.perf_counter()
            run[kind](name, getattr(torch, precision))
            if round_:  # the first round warms up
                times[case].append(time.perf_counter() - started)
    rows = [{"kind": kind, "network": name, "precision": precision, "parameters": parameter_count(models[name]),
             "median_ms": 1000 * statistics.median(times[(kind, name, precision)]),
             "runs_ms": [round(1000 * value, 2) for value in times[(kind, name, precision)]]}
            for kind, name, precision in cases]
    _common.write_json(args.out, {
        "benchmark": "network_cost",
        "command": _common.command_line(),
        "machine": {**_common.machine_info(threads=args.threads),
                    "native_bfloat16": native_bfloat16(cpu)},
        "notes": [f"inference: one {TILE_FRAMES}-frame tile of one channel (1, 2, 512, {TILE_FRAMES}); training: one "
                  f"Adam step on ({BATCH}, 2, 512, {TRAIN_FRAMES}); random weights; medians over rounds in which "
                  "every case runs once, in turn, after one warm-up round."],
        "rows": rows,
    })
    for row in rows:
        print(f"{row['kind']:<9}  {row['network']:<40}  {row['precision']:<8}  {row['median_ms']:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
