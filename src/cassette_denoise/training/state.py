"""What a run leaves in its folder, and how it picks up again.

``run_dir`` holds ``best.safetensors`` and ``latest.safetensors`` (+ JSON sidecars),
``latest.optimizer.safetensors`` and ``state.json`` (with ``latest``, enough to resume exactly),
``latest.average.safetensors`` when weights are averaged, ``steps/stepNNNNNN.safetensors`` with
``keep_every_validation``, ``log.csv`` and its picture ``curve.png``, and ``sources.json`` (the exact
music the run learns from). Every file is written atomically.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from cassette_denoise.audio import atomic_write
from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.model import UNet

LOG_FIELDS = ["step", "elapsed_s", "learning_rate", "train_loss", "val_loss", "val_si_sdr_db",
              "val_si_sdr_improvement_db", "val_lsd_f80_db", "val_gain_db"]


def initialise_from(model: UNet, path: Path) -> None:
    """Copy a trained checkpoint's weights into ``model``.

    Raises:
        ValueError: the checkpoint's model config differs from ``model``'s.
    """
    source, _ = load_model(path)
    if source.config != model.config:
        raise ValueError(f"{path}: its config {source.config} cannot initialise {model.config}")
    model.load_state_dict(source.state_dict(), strict=True)


def save_sources(run_dir: Path, *, train: list[Path], validation: list[Path]) -> None:
    document = {"train": [str(path) for path in train], "validation": [str(path) for path in validation]}
    atomic_write(run_dir / "sources.json", lambda temp: temp.write_text(json.dumps(document, indent=1) + "\n"))


def start_log(run_dir: Path) -> None:
    atomic_write(run_dir / "log.csv", lambda temp: temp.write_text(",".join(LOG_FIELDS) + "\n"))


def append_log(run_dir: Path, row: dict) -> None:
    """Add one validation's row to ``log.csv`` and redraw ``curve.png`` from the whole log."""
    with open(run_dir / "log.csv", "a", newline="") as handle:
        csv.DictWriter(handle, LOG_FIELDS).writerow({key: row.get(key, "") for key in LOG_FIELDS})
    from cassette_denoise.plots import training_curves  # matplotlib only once there is a curve to draw

    figure = training_curves(read_log(run_dir / "log.csv"))
    atomic_write(run_dir / "curve.png", lambda temp: figure.savefig(temp, dpi=100, format="png"))


def read_log(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def save_state(run_dir: Path, model: UNet, optimizer: torch.optim.Optimizer, state: dict, *, metadata: dict,
               average: AveragedModel | None = None) -> None:
    """Write ``latest`` (model, optimiser, averaged weights, counters) so that a run resumes exactly."""
    save_model(run_dir / "latest.safetensors", model, metadata=metadata)
    if average is not None:
        save_model(run_dir / "latest.average.safetensors", average.module, metadata=metadata)
        state = {**state, "averaged_steps": int(average.n_averaged)}
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous()
               for index, values in optimizer_state["state"].items() for key, value in values.items()}
    atomic_write(run_dir / "latest.optimizer.safetensors", lambda temp: save_file(tensors, str(temp)))
    record = json.dumps({**state, "param_groups": optimizer_state["param_groups"]}, indent=2)
    atomic_write(run_dir / "state.json", lambda temp: temp.write_text(record))


def load_state(run_dir: Path, model: UNet, optimizer: torch.optim.Optimizer, *,
               average: AveragedModel | None = None) -> dict:
    """Load ``latest`` into ``model``, ``optimizer`` and ``average``; returns the run's counters."""
    loaded, _ = load_model(run_dir / "latest.safetensors")
    if loaded.config != model.config:
        raise ValueError(f"{run_dir}: checkpoint config {loaded.config} differs from this run's {model.config}")
    model.load_state_dict(loaded.state_dict(), strict=True)
    record = json.loads((run_dir / "state.json").read_text())
    averaged_steps = record.pop("averaged_steps", None)
    if average is not None and averaged_steps is not None:  # else the average starts afresh from here
        average.module.load_state_dict(load_model(run_dir / "latest.average.safetensors")[0].state_dict(), strict=True)
        average.n_averaged.fill_(averaged_steps)
    tensors = load_file(str(run_dir / "latest.optimizer.safetensors"))
    per_parameter: dict[int, dict] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        per_parameter.setdefault(int(index), {})[key] = tensor
    optimizer.load_state_dict({"state": per_parameter, "param_groups": record.pop("param_groups")})
    return record
