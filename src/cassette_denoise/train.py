"""Training: on-the-fly pairs, Adam with warm-up and cosine decay, validation, checkpoints, resume.

Reads top to bottom: config → data → model and optimiser → (resume) → loop of steps with a
validation every ``validate_every_steps`` that writes ``latest`` and, when the validation SI-SDR
improves, ``best``. Runs on one process or, under ``torchrun``, as DistributedDataParallel
(gloo on CPU, NCCL on GPUs); only rank 0 validates, logs and saves.

Files in ``run_dir``: ``best.safetensors`` / ``latest.safetensors`` (+ JSON sidecars),
``latest.optimizer.safetensors``, ``state.json``, ``log.csv``, ``curve.png``, with
``keep_every_validation`` ``steps/`` (the model at every validation), and with ``weight_average_decay``
``latest.average.safetensors`` (the running average, for ``--resume``).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import signal
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, find_audio_files
from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.data import PairConfig, TrainingPairs, fixed_examples, load_noise_recordings, scan_sources
from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser, resolve_device
from cassette_denoise.losses import LOSSES
from cassette_denoise.metrics import lsd, si_sdr
from cassette_denoise.model import UNet, UNetConfig, parameter_count, widen

log = logging.getLogger(__name__)

#: Weight noise (a fraction of each tensor's spread) when a wider model starts from a narrower one:
#: enough to let copied channels diverge, small enough to keep the starting scores (docs/MODEL_CARD.md).
WIDEN_PERTURBATION = 0.01

LOG_FIELDS = ["step", "elapsed_s", "learning_rate", "train_loss", "val_loss", "val_si_sdr_db",
              "val_si_sdr_improvement_db", "val_lsd_f80_db", "val_gain_db"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; read from a TOML file whose keys are these field names."""

    corpus_dir: str
    run_dir: str = "runs/default"
    #: Folder of blank-tape recordings to mix in besides the simulator ("" = simulator only).
    noise_dir: str = ""
    base_width: int = 8
    #: Give the model each bin's noise floor as a second input channel (see ``spectral.model_input``).
    noise_floor_input: bool = False
    #: With ``noise_floor_input``, the floor is measured over this many frames around each crop, as
    #: it is over a whole 512-frame tile at inference.
    context_frames: int = 512
    #: Give the model each cell's coherence with the other channel as a last input channel (see
    #: ``spectral.channel_coherence``); needs stereo examples (``stereo_probability``).
    coherence_input: bool = False
    #: Share of examples that keep both channels of a stereo source (see ``PairConfig``).
    stereo_probability: float = 0.0
    #: Share of examples whose noise above 4 kHz rises with the music's treble, and by how much (see ``PairConfig``).
    noise_follows_treble_probability: float = 0.0
    noise_follows_treble_db: tuple[float, float] = (2.0, 8.0)
    #: Start from this checkpoint's weights ("" = He-normal init). Input channels the checkpoint lacks
    #: start at zero, so the run begins exactly where that model ended.
    init_from: str = ""
    loss: str = "output_log_l1"
    #: A simulator preset, or a list of them to draw from (see ``PairConfig``).
    preset: str | tuple[str, ...] = "training"
    #: Share of examples whose clean music is band-limited first, and the corner range (see ``PairConfig``).
    band_limit_probability: float = 0.0
    band_limit_hz: tuple[float, float] = (4000.0, 16000.0)
    #: Share of examples whose whole noise is rescaled to a music-to-noise ratio in ``noise_snr_db`` (see ``PairConfig``).
    noise_snr_probability: float = 0.0
    noise_snr_db: tuple[float, float] = (0.0, 40.0)
    #: Share of examples that also get modulation-noise sidebands (see ``PairConfig``).
    modulation_sidebands_probability: float = 0.0
    #: Share of examples whose clean music's quiet cells are emptied first, and the threshold range (see ``PairConfig``).
    empty_bins_probability: float = 0.0
    empty_bins_below_db: tuple[float, float] = (50.0, 80.0)
    batch_size: int = 8
    crop_frames: int = 128
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-4
    warmup_steps: int = 200
    max_steps: int = 20_000
    #: Stop cleanly after this much wall time (0 = no limit); resume with ``--resume``.
    max_minutes: float = 0.0
    validate_every_steps: int = 250
    validation_examples: int = 32
    validation_crop_frames: int = 256
    #: Stop when validation SI-SDR has not improved for this many validations.
    patience_validations: int = 12
    #: Also keep the model of every validation as ``steps/stepNNNNNN.safetensors``, so a checkpoint can
    #: be chosen afterwards on other criteria (the validation harness of ``benchmarks/quality.py``).
    keep_every_validation: bool = False
    gradient_clip_norm: float = 1.0
    #: Decay of an exponential moving average of the weights (0 = off; 0.999 spans about the last 1000
    #: steps). When on, validation, ``best`` and ``steps/`` hold the averaged weights, which move less from
    #: one checkpoint to the next than the raw ones; ``latest`` keeps both, so a run resumes exactly.
    weight_average_decay: float = 0.0
    #: Weight of a penalty on mask logits beyond ±``logit_limit`` (0 = off). Without it the loss pushes
    #: music bins' logits ever higher (a mask of exactly 1 needs an infinite logit); there the sigmoid's
    #: gradient vanishes, and hiss bins that share those features can no longer be learned down.
    logit_penalty: float = 0.0
    #: sigmoid(5) = 0.9933 (−0.06 dB): pass-through stays within reach.
    logit_limit: float = 5.0
    seed: int = 0
    threads: int = 1
    workers: int = 1
    device: str = "auto"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {sorted(LOSSES)}")
        if self.crop_frames % 16 or self.validation_crop_frames % 16:
            raise ValueError(f"crop frames must be multiples of 16, got {self.crop_frames}/{self.validation_crop_frames}")
        if not 0.0 <= self.weight_average_decay < 1.0:
            raise ValueError(f"weight_average_decay must be in [0, 1), got {self.weight_average_decay}")
        if self.coherence_input != (self.stereo_probability > 0):
            raise ValueError(f"coherence_input ({self.coherence_input}) needs stereo examples and stereo examples "
                             f"need it: stereo_probability is {self.stereo_probability}")
        if self.noise_floor_input and self.context_frames < self.crop_frames:
            raise ValueError(f"context_frames ({self.context_frames}) must be at least crop_frames ({self.crop_frames})")

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        """The run config in TOML file ``path``; ``overrides`` that are not None win over the file.

        A file may start from another with ``extends = "other.toml"`` (relative to the file): it holds
        only what differs, so a fine-tune states its changes and not the whole recipe again."""
        values = _toml_settings(Path(path), seen=())
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        # TOML has arrays where the (frozen, hashable) config has tuples.
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def _toml_settings(path: Path, *, seen: tuple[Path, ...]) -> dict:
    """The settings of TOML file ``path`` over those of the file it ``extends``, recursively."""
    resolved = path.resolve()
    if resolved in seen:
        raise ValueError(f"{path}: 'extends' loops back to a file it came from ({' -> '.join(map(str, seen))})")
    values = tomllib.loads(path.read_text())
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ValueError(f"{path}: 'extends' must be a file name, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ValueError(f"{path}: extends {base!r}, but {base_path} does not exist")
    return {**_toml_settings(base_path, seen=(*seen, resolved)), **values}


def corpus_files(corpus_dir: Path, split: str) -> list[Path]:
    """Files of one split from a corpus folder's manifest; a plain folder of audio counts as all train."""
    manifest = corpus_dir / "manifest.json"
    if not manifest.exists():
        # A plain folder of music: every 20th file (in name order) is held out for validation.
        files = find_audio_files(corpus_dir)
        held_out = files[::20] if len(files) > 1 else []
        if split == "validation":
            return held_out
        if split == "train":
            return [file for file in files if file not in held_out]
        return []
    from cassette_denoise.corpus import load_manifest

    return [Path(entry.path) if Path(entry.path).is_absolute() else corpus_dir / entry.path
            for entry in load_manifest(corpus_dir) if entry.split == split]


def pair_config(config: TrainConfig, *, crop_frames: int) -> PairConfig:
    """The run's pair settings: every :class:`PairConfig` option the run's config also has, by name (so a
    new pair option needs only a field of the same name here), at ``crop_frames`` frames per example."""
    names = {field.name for field in dataclasses.fields(PairConfig)} & {field.name for field in dataclasses.fields(config)}
    return PairConfig(**{name: getattr(config, name) for name in names - {"crop_frames"}}, crop_frames=crop_frames)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_learning_rate`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.final_learning_rate + (config.learning_rate - config.final_learning_rate) * cosine


def spectra_batch(noisy: torch.Tensor, target: torch.Tensor, *, noise_floor: bool = False,
                  coherence: bool = False, crop_frames: int | None = None):
    """Waveforms ``(batch, samples)``, or ``(batch, 2, samples)`` with the channel to denoise first, ->
    model input ``(batch, channels, BINS, frames)``, noisy and target complex STFTs of that channel
    ``(batch, 1, BINS, frames)`` (what :data:`LOSSES` take).

    The input is computed over every frame (so a noise floor sees the whole context) and then all three
    are cut to the centre ``crop_frames`` frames when given. ``coherence`` adds the channels' coherence.
    """
    if noisy.dim() == 2:
        noisy, target = noisy.unsqueeze(1), target.unsqueeze(1)
    spectra = spectral.stft(noisy)  # (batch, channels, BINS, frames)
    noisy_spectrum = spectra[:, 0]
    target_spectrum = spectral.stft(target[:, 0]).unsqueeze(1)
    coherence_map = spectral.channel_coherence(spectra)[:, 0] if coherence else None
    features = spectral.model_input(noisy_spectrum.abs(), noise_floor=noise_floor, coherence=coherence_map)
    noisy_spectrum = noisy_spectrum.unsqueeze(1)
    if crop_frames is not None and crop_frames < features.shape[-1]:
        first = (features.shape[-1] - crop_frames) // 2
        window = slice(first, first + crop_frames)
        features, noisy_spectrum, target_spectrum = (
            features[..., window], noisy_spectrum[..., window], target_spectrum[..., window])
    # channels_last makes oneDNN's convolutions 2-3x faster for this narrow network on CPU.
    return features.contiguous(memory_format=torch.channels_last), noisy_spectrum, target_spectrum


def logit_penalty(logits: torch.Tensor, *, limit: float) -> torch.Tensor:
    """Mean squared excess of ``|logits|`` over ``limit``; zero inside the range."""
    return torch.relu(logits.abs() - limit).pow(2).mean()


def validate(model: UNet, noisy: torch.Tensor, target: torch.Tensor, *, loss_name: str) -> dict[str, float]:
    """Scores on fixed pairs ``(count, samples)`` (or ``(count, 2, samples)``, scored on the first channel)
    through the real inference path (tiles, overlap-add)."""
    model.eval()
    with torch.no_grad():
        features, noisy_spectrum, target_spectrum = spectra_batch(
            noisy, target, noise_floor=model.config.noise_floor_input, coherence=model.config.coherence_input)
        loss = float(LOSSES[loss_name](model(features), noisy_spectrum, target_spectrum))
    denoiser = Denoiser(copy.deepcopy(model), device="cpu")
    noisy_np, target_np = noisy.numpy(), target.numpy()
    if noisy_np.ndim == 3:
        # Each pair is one recording: its two channels go through together, as a stereo file would.
        outputs = np.stack([denoiser.denoise(pair, MODEL_SAMPLE_RATE, strength_db=DEFAULT_STRENGTH_DB)[0]
                            for pair in noisy_np])
        noisy_np, target_np = noisy_np[:, 0], target_np[:, 0]
    else:
        # Unrelated mono pairs, eight at a time as the channels of one array (each channel gets its own mask).
        outputs = np.concatenate([
            denoiser.denoise(noisy_np[start: start + 8], MODEL_SAMPLE_RATE, strength_db=DEFAULT_STRENGTH_DB)
            for start in range(0, len(noisy_np), 8)
        ])
    scores = {"val_loss": loss}
    si_out = [si_sdr(t, o) for t, o in zip(target_np, outputs)]
    si_in = [si_sdr(t, n) for t, n in zip(target_np, noisy_np)]
    scores["val_si_sdr_db"] = float(np.mean(si_out))
    scores["val_si_sdr_improvement_db"] = float(np.mean(np.subtract(si_out, si_in)))
    scores["val_lsd_f80_db"] = float(np.mean([lsd(t, o, floor_db=80) for t, o in zip(target_np, outputs)]))
    # Least-squares gain of the output onto the target: a global level slip shows here, not in SI-SDR.
    gain = (outputs * target_np).sum() / (target_np**2).sum()
    scores["val_gain_db"] = float(20 * np.log10(max(gain, 1e-6)))
    return scores


class _Distributed:
    """Rank and world size under torchrun; a no-op for a single process."""

    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        if self.world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def close(self) -> None:
        if self.world_size > 1:
            # Let every rank finish its last collective before any tears the group down: a gloo peer
            # that vanishes mid-operation aborts the other process.
            dist.barrier()
            dist.destroy_process_group()


def train(config: TrainConfig, *, resume: bool = False, progress=None) -> dict:
    """Run (or continue) training; returns the final state (step, best scores).

    ``progress`` is called with ``(step, scores)`` after each validation.
    """
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    distributed = _Distributed(device)
    if device.type == "cuda" and distributed.world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    corpus = Path(config.corpus_dir)
    train_sources = scan_sources(corpus_files(corpus, "train"))
    validation_sources = scan_sources(corpus_files(corpus, "validation"))
    noises = load_noise_recordings(find_audio_files(config.noise_dir)) if config.noise_dir else []
    example_frames = config.context_frames if config.noise_floor_input else config.crop_frames
    pairs = pair_config(config, crop_frames=example_frames)
    validation_pairs = dataclasses.replace(pairs, crop_frames=config.validation_crop_frames)
    val_noisy, val_target = fixed_examples(validation_sources, config=validation_pairs, seed=10_000 + config.seed,
                                           count=config.validation_examples, noises=noises)

    if distributed.is_main:
        # The exact music this run learns from, for the model card.
        (run_dir / "sources.json").write_text(json.dumps({
            "train": [str(source.path) for source in train_sources],
            "validation": [str(source.path) for source in validation_sources],
        }, indent=1))

    model = UNet(UNetConfig(base_width=config.base_width, noise_floor_input=config.noise_floor_input,
                            coherence_input=config.coherence_input))
    if config.init_from and not (resume and (run_dir / "latest.safetensors").exists()):
        initialise_from(model, Path(config.init_from), generator=torch.Generator().manual_seed(config.seed))
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.weight_average_decay))
               if config.weight_average_decay else None)
    state = {"step": 0, "best_val_si_sdr_db": -math.inf, "stale_validations": 0, "elapsed_s": 0.0}
    if resume and (run_dir / "latest.safetensors").exists():
        state = _load_training_state(run_dir, model, optimizer, average=average)
        log.info("resumed at step %d", state["step"])
    elif distributed.is_main:
        (run_dir / "log.csv").write_text(",".join(LOG_FIELDS) + "\n")
    trainable = DistributedDataParallel(model) if distributed.world_size > 1 else model

    dataset = TrainingPairs(train_sources, config=pairs, seed=config.seed, rank=distributed.rank,
                            start_step=state["step"], noises=noises)
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers,
                        persistent_workers=config.workers > 0)
    metadata = {
        "training": {
            "config": dataclasses.asdict(config),
            "train_files": len(train_sources),
            "train_minutes": round(sum(s.frames for s in train_sources) / MODEL_SAMPLE_RATE / 60, 1),
            "parameters": parameter_count(model),
        }
    }

    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    previous_handler = signal.signal(signal.SIGTERM, request_stop)
    started = time.monotonic() - state["elapsed_s"]
    losses: list[float] = []
    batches = iter(loader)
    try:
        while state["step"] < config.max_steps:
            trainable.train()
            noisy, target = next(batches)
            features, noisy_spectrum, target_spectrum = spectra_batch(
                noisy.to(device), target.to(device), noise_floor=config.noise_floor_input,
                coherence=config.coherence_input, crop_frames=config.crop_frames)
            rate = learning_rate_at(state["step"], config)
            for group in optimizer.param_groups:
                group["lr"] = rate
            logits = trainable(features, logits=True)
            loss = LOSSES[config.loss](torch.sigmoid(logits), noisy_spectrum, target_spectrum)
            if config.logit_penalty:
                loss = loss + config.logit_penalty * logit_penalty(logits, limit=config.logit_limit)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip_norm)
            optimizer.step()
            if average is not None:
                average.update_parameters(model)
            losses.append(loss.item())
            state["step"] += 1

            at_validation = state["step"] % config.validate_every_steps == 0 or state["step"] == config.max_steps
            if not at_validation and not stop_requested:
                continue
            state["elapsed_s"] = time.monotonic() - started
            stop = stop_requested
            if distributed.is_main:
                scored = model if average is None else average.module  # what best and steps/ hold
                scores = validate(scored.cpu(), val_noisy, val_target, loss_name=config.loss)
                scored.to(device)
                row = {"step": state["step"], "elapsed_s": round(state["elapsed_s"], 1), "learning_rate": rate,
                       "train_loss": float(np.mean(losses)), **scores}
                losses.clear()
                _append_log(run_dir, row)
                if scores["val_si_sdr_db"] > state["best_val_si_sdr_db"]:
                    state["best_val_si_sdr_db"] = scores["val_si_sdr_db"]
                    state["stale_validations"] = 0
                    save_model(run_dir / "best.safetensors", scored, metadata={**metadata, "validation": row})
                else:
                    state["stale_validations"] += 1
                _save_training_state(run_dir, model, optimizer, state, metadata={**metadata, "validation": row},
                                     average=average)
                if config.keep_every_validation:
                    (run_dir / "steps").mkdir(exist_ok=True)
                    save_model(run_dir / "steps" / f"step{state['step']:06d}.safetensors", scored,
                               metadata={**metadata, "validation": row})
                if progress:
                    progress(state["step"], row)
                stop = stop or state["stale_validations"] >= config.patience_validations
                stop = stop or bool(config.max_minutes and state["elapsed_s"] > config.max_minutes * 60)
            if distributed.broadcast_flag(stop):
                break
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        distributed.close()
    return state


def initialise_from(model: UNet, path: Path, *, generator: torch.Generator | None = None) -> None:
    """Copy a trained checkpoint's weights into ``model``, which may be wider or take more input channels.

    A narrower checkpoint is widened first (:func:`model.widen`, with 1 % weight noise from
    ``generator`` so that the copied channels can learn different things). Extra input channels
    start at zero. Apart from that noise, ``model`` then computes what the checkpoint did.

    Raises:
        ValueError: the checkpoint's layout differs in anything else, or is wider than ``model``.
    """
    source, _ = load_model(path)
    expected = dataclasses.replace(model.config, noise_floor_input=source.config.noise_floor_input,
                                   coherence_input=source.config.coherence_input, base_width=source.config.base_width)
    if source.config != expected or source.config.base_width > model.config.base_width:
        raise ValueError(f"{path}: its config {source.config} cannot initialise {model.config}")
    if source.config.base_width < model.config.base_width:
        source = widen(source, model.config.base_width, perturbation=WIDEN_PERTURBATION, generator=generator)
    state = model.state_dict()
    for name, tensor in source.state_dict().items():
        target = state[name]
        if tensor.shape == target.shape:
            target.copy_(tensor)
        elif tensor.dim() == 4 and tensor.shape[1] < target.shape[1]:
            target.zero_()
            target[:, : tensor.shape[1]].copy_(tensor)
        else:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model needs {tuple(target.shape)}")


def _append_log(run_dir: Path, row: dict) -> None:
    with open(run_dir / "log.csv", "a", newline="") as handle:
        csv.DictWriter(handle, LOG_FIELDS).writerow({key: row.get(key, "") for key in LOG_FIELDS})
    from cassette_denoise.plots import training_curves

    figure = training_curves(read_log(run_dir / "log.csv"))
    figure.savefig(run_dir / "curve.png", dpi=100)


def read_log(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def _save_training_state(run_dir: Path, model: UNet, optimizer, state: dict, *, metadata: dict,
                         average: AveragedModel | None = None) -> None:
    save_model(run_dir / "latest.safetensors", model, metadata=metadata)
    if average is not None:
        save_model(run_dir / "latest.average.safetensors", average.module, metadata=metadata)
        state = {**state, "averaged_steps": int(average.n_averaged)}
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous()
               for index, values in optimizer_state["state"].items() for key, value in values.items()}
    temp = run_dir / ".latest.optimizer.partial"
    save_file(tensors, str(temp))
    os.replace(temp, run_dir / "latest.optimizer.safetensors")
    record = {**state, "param_groups": optimizer_state["param_groups"]}
    (run_dir / ".state.partial").write_text(json.dumps(record, indent=2))
    os.replace(run_dir / ".state.partial", run_dir / "state.json")


def _load_training_state(run_dir: Path, model: UNet, optimizer, *, average: AveragedModel | None = None) -> dict:
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
