"""Model files: safetensors weights plus a JSON sidecar; loading never unpickles code.

``NAME.safetensors`` holds the tensors; ``NAME.json`` holds the format version, the model config,
package and torch versions, a description of the training data, the measured metrics and, once
chosen (benchmarks/mask_exponent.py), the inference calibration ``{"mask_exponent": p,
"treble_mask_exponent": q}`` (the second optional).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cassette_denoise import __version__
from cassette_denoise.audio import atomic_write
from cassette_denoise.model import UNet, UNetConfig

FORMAT_VERSION = 1
#: Model options older files name although they hold the value every model now has; read as absent.
RETIRED_CONFIG_KEYS = {"coherence_input": False}
#: A tile of 512 frames must halve evenly at every level.
MAX_LEVELS = 10
#: Far above any model this package trains (the seed's width 64 is ≈ 30 M): refuses configs that would
#: allocate gigabytes before a weight is read.
MAX_PARAMETERS = 100_000_000
MAX_SIDECAR_BYTES = 1 << 24
#: safetensors' names for the float types a model may be stored in.
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


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
    """Build the model its sidecar describes and load the weights strictly (no missing or extra keys).

    Everything that can be checked without the weights is checked before any memory is allocated:
    the sidecar is a JSON object with a known format, a config of the right types within
    :data:`MAX_LEVELS` / :data:`MAX_PARAMETERS`, a numeric calibration, and tensors in the file
    header whose names, shapes and float types match that config. The weights must be finite.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    path = _weights_path(Path(path))
    sidecar = _read_sidecar(path)
    config = _config(path, sidecar)
    try:
        with torch.device("meta"):  # shapes only: a huge config costs nothing here
            expected = {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in UNet(config).state_dict().items()}
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: bad model config in sidecar ({error})") from None
    parameters = sum(math.prod(shape) for shape, _ in expected.values())
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its config asks for {parameters:,} parameters, more than the "
                              f"{MAX_PARAMETERS:,} this package loads")
    _check_header(path, expected)
    tensors = load_file(str(path))
    bad = [name for name, tensor in tensors.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights in {bad[:3]}")
    model = UNet(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, OSError) as error:
        detail = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path}: weights do not match the config ({detail})") from None
    return model.eval(), sidecar


def _weights_path(path: Path) -> Path:
    """``NAME``, ``NAME.json`` and ``NAME.safetensors`` all mean the weights file; anything else is not a model."""
    if path.suffix in ("", ".json"):
        path = path.with_suffix(".safetensors")
    elif path.suffix != ".safetensors":
        if path.exists():
            raise CheckpointError(f"{path}: not a model file (want NAME.safetensors with its NAME.json sidecar)")
        raise CheckpointError(f"{path}: no such model file (want NAME.safetensors with its NAME.json sidecar)")
    if not path.is_file():
        raise CheckpointError(f"{path}: model weights not found")
    return path


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar_file = sidecar_path(path)
    try:
        if sidecar_file.stat().st_size > MAX_SIDECAR_BYTES:
            raise CheckpointError(f"{sidecar_file}: sidecar of {sidecar_file.stat().st_size:,} bytes is too large")
        sidecar = json.loads(sidecar_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: its sidecar {sidecar_file.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{sidecar_file}: not a readable JSON sidecar ({error})") from None
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"{sidecar_file}: the sidecar must be a JSON object, got {type(sidecar).__name__}")
    if sidecar.get("format_version") != FORMAT_VERSION or sidecar.get("model") != "UNet":
        raise CheckpointError(
            f"{path}: unsupported model file (format {sidecar.get('format_version')!r}, model {sidecar.get('model')!r})"
        )
    calibration = sidecar.get("calibration", {})
    if not isinstance(calibration, dict) or not all(
            _is_number(calibration.get(key, 1.0)) and 0.25 <= calibration.get(key, 1.0) <= 8
            for key in ("mask_exponent", "treble_mask_exponent")):
        raise CheckpointError(f"{path}: bad calibration in sidecar ({calibration!r}); "
                              f"want {{\"mask_exponent\": 0.25-8, \"treble_mask_exponent\": 0.25-8 (optional)}}")
    return sidecar


def _config(path: Path, sidecar: dict[str, Any]) -> UNetConfig:
    fields = {field.name: field.type for field in dataclasses.fields(UNetConfig)}
    config = sidecar.get("config")
    if isinstance(config, dict):
        config = {key: value for key, value in config.items() if RETIRED_CONFIG_KEYS.get(key, object()) != value}
    if not isinstance(config, dict) or set(config) - set(fields):
        raise CheckpointError(f"{path}: bad model config in sidecar ({config!r:.200}); want an object with keys "
                              f"from {sorted(fields)}")
    for key, value in config.items():
        wanted = {"int": int, "float": (int, float), "bool": bool}[fields[key]]
        if isinstance(value, bool) != (wanted is bool) or not isinstance(value, wanted) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise CheckpointError(f"{path}: bad model config in sidecar ({key} = {value!r}, want {fields[key]})")
    try:
        config = UNetConfig(**config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: bad model config in sidecar ({error})") from None
    if not 2 <= config.levels <= MAX_LEVELS:
        raise CheckpointError(f"{path}: bad model config in sidecar (levels = {config.levels}, want 2-{MAX_LEVELS})")
    return config


def _check_header(path: Path, expected: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    """Names, shapes and types from the safetensors header (nothing is loaded) against the config's."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            found = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                     for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(error).split())[:200]})") from None
    not_float = {name: dtype for name, (_, dtype) in found.items() if dtype not in FLOAT_DTYPES}
    if not_float:
        raise CheckpointError(f"{path}: weights must be floating point, got {dict(list(not_float.items())[:3])}")
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [f"{name} {found[name][0]} (want {expected[name][0]})" for name in sorted(set(found) & set(expected))
             if found[name][0] != expected[name][0]]
    if missing or extra or wrong:
        detail = "; ".join(part for part in (f"missing {missing[:3]}" if missing else "",
                                            f"unexpected {extra[:3]}" if extra else "",
                                            f"shapes {wrong[:3]}" if wrong else "") if part)
        raise CheckpointError(f"{path}: weights do not match the config ({detail})")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

