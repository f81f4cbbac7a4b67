"""The model's arithmetic: bfloat16 where the CPU computes it natively, float32 everywhere else.

Inference and training both ask here (``Denoiser(precision=...)``, ``TrainConfig.precision``); the choices
live in :data:`cassette_denoise.defaults.PRECISIONS` so that the command line can show them without torch.
Only the network's convolutions change: the weights stay float32, and callers compute the mask's sigmoid
and the loss in float32.
"""

from __future__ import annotations

import torch

from cassette_denoise.defaults import PRECISIONS


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU whose oneDNN computes bfloat16 convolutions natively (AVX-512 BF16 or
    AMX); elsewhere bfloat16 is emulated and slower than float32."""
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The model's compute dtype for ``precision`` (one of :data:`PRECISIONS`) on ``device``: ``auto`` takes
    bfloat16 where :func:`native_bfloat16` (a tile in 0.6 of float32's time; the output moves by about -84 dB
    against float32's, docs/MODEL_CARD.md "Precision") and float32 everywhere else, the GPU included.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def reduced_precision(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """The context the network runs in for ``dtype`` (from :func:`resolve_precision`): autocast to it on
    ``device``, or nothing at all for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
