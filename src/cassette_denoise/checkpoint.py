"""Model files: safetensors weights plus a JSON sidecar; loading never unpickles code.

``NAME.safetensors`` holds the tensors; ``NAME.json`` holds the format version, the model config,
package and torch versions, a description of the training data, the measured metrics and, once
chosen (benchmarks/mask_exponent.py), the inference calibration ``{"mask_exponent": p,
"treble_mask_exponent": q}`` (the second optional).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cassette_denoise import __version__
from cassette_denoise.audio import atomic_write
from cassette_denoise.model import UNet, UNetConfig

FORMAT_VERSION = 1
#: Model options older files name although they hold the value every model now has; read as absent.
RETIRED_CONFIG_KEYS = {"coherence_input": False}


class CheckpointError(Exception):
    """A model file that is missing, malformed, or does not match its config."""


def sidecar_path(weights_path: str | os.PathLike) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_model(path: str | os.PathLike, model: UNet, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors``) and its JSON sidecar, each atomically.

    Raises:
        CheckpointError: if any weight is NaN or infinite (a diverged model must never be shipped).
    """
    path = Path(path).with_suffix(".safetensors")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    bad = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{path}: refusing to save non-finite weights in {bad[:3]}")
    sidecar = {
        "format_version": FORMAT_VERSION,
        "model": "UNet",
        "config": dataclasses.asdict(model.config),
        "package_version": __version__,
        "torch_version": torch.__version__,
        **(metadata or {}),
    }
    atomic_write(path, lambda temp: save_file(tensors, str(temp)))
    atomic_write(sidecar_path(path), lambda temp: temp.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return path


def load_model(path: str | os.PathLike) -> tuple[UNet, dict[str, Any]]:
    """Build the model its sidecar describes and load the weights strictly (no missing or extra keys)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: model weights not found")
    try:
        sidecar = json.loads(sidecar_path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: its sidecar {sidecar_path(path).name} is missing") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{sidecar_path(path)}: not valid JSON ({error})") from None
    if sidecar.get("format_version") != FORMAT_VERSION or sidecar.get("model") != "UNet":
        raise CheckpointError(
            f"{path}: unsupported model file (format {sidecar.get('format_version')!r}, model {sidecar.get('model')!r})"
        )
    try:
        settings = {key: value for key, value in sidecar["config"].items()
                    if RETIRED_CONFIG_KEYS.get(key, object()) != value}
        config = UNetConfig(**settings)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: bad model config in sidecar ({error})") from None
    calibration = sidecar.get("calibration", {})
    if not isinstance(calibration, dict) or not all(
            isinstance(calibration.get(key, 1.0), (int, float)) for key in ("mask_exponent", "treble_mask_exponent")):
        raise CheckpointError(f"{path}: bad calibration in sidecar ({calibration!r}); "
                              f"want {{\"mask_exponent\": number, \"treble_mask_exponent\": number (optional)}}")
    model = UNet(config)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError) as error:
        detail = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path}: weights do not match the config ({detail})") from None
    return model.eval(), sidecar

