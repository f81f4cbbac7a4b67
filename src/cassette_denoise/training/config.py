"""What a training run depends on: one frozen config whose defaults are the recipe's first stage.

A run config nests the model's shape (:class:`~cassette_denoise.model.UNetConfig`, TOML table
``[model]``) and what goes into each example (:class:`~cassette_denoise.training.examples.PairConfig`,
table ``[pairs]``); everything else is the optimisation and bookkeeping of the run itself. A TOML file
states only what differs from these defaults (see ``configs/``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cassette_denoise.defaults import PRECISIONS
from cassette_denoise.model import UNetConfig
from cassette_denoise.training.examples import PairConfig

#: The recipe's model: width 8 keeps inference at about 0.03 of real time on two CPU cores, and the
#: noise-floor channel tells the mask the hiss level that a few frames of dense music hide.
RECIPE_MODEL = UNetConfig(base_width=8, noise_floor_input=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; read from a TOML file whose keys are these field names."""

    corpus_dir: str = "data/corpus"
    run_dir: str = "runs/default"
    #: Folder of blank-tape recordings to mix in besides the simulator ("" = simulator only).
    noise_dir: str = ""
    #: Start from this checkpoint's weights ("" = the model's own initialisation); its config must match.
    init_from: str = ""
    #: A trained checkpoint whose mask logits the model also learns to match ("" = none), by
    #: ``teacher_weight`` times their mean squared difference, so that a cheaper network learns a trained
    #: one's behaviour besides the examples' targets. Its shape may differ from ``model``.
    teacher: str = ""
    teacher_weight: float = 1.0
    model: UNetConfig = RECIPE_MODEL
    pairs: PairConfig = PairConfig()
    batch_size: int = 8
    #: Examples of each batch whose noise-floor channel is measured on their noise alone, as when a user
    #: names a noise sample (``--noise-sample``), instead of on the noisy music; the rest use the tile's own.
    floor_from_noise_examples: int = 0
    #: Validation gives each pair the floor of its noise alone instead of each tile's own, for a model that is
    #: always given its tape's floor (an adapted one carries its blank tape's): ``best`` is then picked as it is used.
    validation_floor_from_noise: bool = False
    #: Frames of each example the loss sees: 128 frames are 1.5 s; the network is fully convolutional
    #: and infers on 512-frame tiles.
    crop_frames: int = 128
    #: Frames each example is made of; with ``model.noise_floor_input`` the floor is measured over all of
    #: them (at inference, over a 512-frame tile and its context, ``tiles.NOISE_FLOOR_CONTEXT_FRAMES``), and
    #: the loss sees the centre ``crop_frames``.
    context_frames: int = 512
    learning_rate: float = 1e-3
    final_learning_rate: float = 5e-5
    warmup_steps: int = 200
    max_steps: int = 3000
    #: Stop cleanly after this much wall time, looked at after every step (0 = no limit); continue with
    #: ``--resume``.
    max_minutes: float = 0.0
    validate_every_steps: int = 250
    validation_examples: int = 32
    validation_crop_frames: int = 256
    #: Stop when validation SI-SDR has not improved for this many validations.
    patience_validations: int = 12
    #: Also keep the model of every validation as ``steps/stepNNNNNN.safetensors``, so that a later stage
    #: can start from a chosen step rather than from the best-scoring one.
    keep_every_validation: bool = True
    gradient_clip_norm: float = 1.0
    #: Decay of an exponential moving average of the weights (0 = off; 0.999 spans about the last 1000
    #: steps). When on, validation, ``best`` and ``steps/`` hold the averaged weights, which move less from
    #: one checkpoint to the next than the raw ones; ``latest`` keeps both, so a run resumes exactly.
    weight_average_decay: float = 0.0
    #: Weight of :func:`~cassette_denoise.training.losses.logit_penalty` (0 = off).
    logit_penalty: float = 0.01
    #: sigmoid(5) = 0.9933 (−0.06 dB): pass-through stays within reach.
    logit_limit: float = 5.0
    seed: int = 0
    #: Arithmetic of the forward and backward passes (``defaults.PRECISIONS``): ``auto`` is bfloat16 where the
    #: CPU computes it natively, about 1.5× the steps per second of float32 there; the weights, the loss and
    #: the optimiser stay float32 either way.
    precision: str = "float32"
    threads: int = 1
    workers: int = 1
    device: str = "auto"

    def __post_init__(self):
        multiple = self.model.frame_multiple
        for name in ("crop_frames", "context_frames", "validation_crop_frames"):
            if getattr(self, name) % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple}, got {getattr(self, name)}")
        if not 0 <= self.floor_from_noise_examples <= self.batch_size:
            raise ValueError(f"floor_from_noise_examples must be between 0 and batch_size ({self.batch_size}), "
                             f"got {self.floor_from_noise_examples}")
        if self.context_frames < self.crop_frames:
            raise ValueError(f"context_frames ({self.context_frames}) must be at least crop_frames ({self.crop_frames})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.teacher_weight < 0:
            raise ValueError(f"teacher_weight must be at least 0, got {self.teacher_weight}")
        if not 0.0 <= self.weight_average_decay < 1.0:
            raise ValueError(f"weight_average_decay must be in [0, 1), got {self.weight_average_decay}")
        for name in ("batch_size", "max_steps", "validate_every_steps", "validation_examples", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def example_frames(self) -> int:
        """Frames each training example is made of: the whole context for a noise-floor model."""
        return self.context_frames if self.model.noise_floor_input else self.crop_frames

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        """The run config in TOML file ``path``; ``overrides`` (top-level fields) that are not None win.

        Raises:
            ValueError: a key that is not a field (named with its table), or a value a config refuses.
        """
        settings = tomllib.loads(Path(path).read_text())
        try:
            config = from_dict(settings)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None
        return dataclasses.replace(config, **{key: value for key, value in overrides.items() if value is not None})


def from_dict(settings: dict) -> TrainConfig:
    """A :class:`TrainConfig` from nested plain values (TOML's, or a sidecar's ``training.config``); every
    value not given, in the ``model`` and ``pairs`` tables too, is the default's."""
    values = _checked(TrainConfig, settings, table="")
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    for name in ("model", "pairs"):
        if name in values:
            if not isinstance(values[name], dict):
                raise ValueError(f"{name} must be a table, got {values[name]!r}")
            # A table states what differs from the recipe's own model or examples, as the file does for the rest.
            values[name] = dataclasses.replace(defaults[name], **_checked(type(defaults[name]), values[name],
                                                                          table=f"{name}."))
    return TrainConfig(**values)


def _checked(kind, settings: dict, *, table: str) -> dict:
    """``settings`` with lists made tuples (the frozen configs hold tuples), refusing unknown keys."""
    unknown = set(settings) - {field.name for field in dataclasses.fields(kind)}
    if unknown:
        raise ValueError(f"unknown settings {sorted(table + name for name in unknown)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
