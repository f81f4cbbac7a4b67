"""Training: on-the-fly examples, Adam with warm-up and cosine decay, validation, checkpoints, resume.

:func:`train` reads top to bottom: data → model and optimiser → (resume) → a loop of steps, with a
validation every ``validate_every_steps`` that writes ``latest`` and, when the validation SI-SDR
improves, ``best`` (files: :mod:`cassette_denoise.training.state`). Runs on one process or, under
``torchrun``, as DistributedDataParallel (gloo on CPU, NCCL on GPUs); only rank 0 validates, logs and saves.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from cassette_denoise import spectral
from cassette_denoise.audio import MODEL_SAMPLE_RATE, find_audio_files
from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.corpus.manifest import corpus_files
from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser, resolve_device
from cassette_denoise.metrics import lsd, si_sdr
from cassette_denoise.model import UNet, parameter_count
from cassette_denoise.precision import reduced_precision, resolve_precision
from cassette_denoise.training import state as run_files
from cassette_denoise.training.config import TrainConfig
from cassette_denoise.training.examples import (
    Source,
    TrainingPairs,
    fixed_examples,
    load_noise_recordings,
    scan_sources,
)
from cassette_denoise.training.losses import logit_penalty, spectral_loss, teacher_loss

log = logging.getLogger(__name__)

#: Validation examples are drawn with this added to the run's seed, so they never repeat a training draw.
VALIDATION_SEED_OFFSET = 10_000


def train(config: TrainConfig, *, resume: bool = False, on_step: Callable[[int, float], None] | None = None,
          on_validation: Callable[[int, dict], None] | None = None) -> dict:
    """Run (or, with ``resume``, continue) training; returns the final state (step, best scores).

    ``on_step(step, loss)`` is called after every step and ``on_validation(step, row)`` after each
    validation, on the main process only.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    distributed = _Distributed(resolve_device(config.device))
    run = _prepare(config, distributed, resume=resume)
    state = _start_or_resume(run, resume=resume, is_main=distributed.is_main)
    batches = _batches(config, run.train_sources, run.noises, rank=distributed.rank, start_step=state["step"])
    started, losses = time.monotonic() - state["elapsed_s"], []
    with _StopOnSigterm() as stop_signal, distributed:
        trainable = DistributedDataParallel(run.model) if distributed.world_size > 1 else run.model
        while state["step"] < config.max_steps:
            noisy, target = (tensor.to(distributed.device) for tensor in next(batches))
            rate = learning_rate_at(state["step"], config)
            losses.append(_step(trainable, run, noisy, target, rate=rate))
            state["step"] += 1
            if on_step and distributed.is_main:
                on_step(state["step"], losses[-1])
            # The time limit is looked at after every step, so a run stops within a step of it; under
            # torchrun rank 0's clock decides for every rank.
            out_of_time = bool(config.max_minutes) and distributed.broadcast_flag(
                time.monotonic() - started > config.max_minutes * 60)
            at_validation = (state["step"] % config.validate_every_steps == 0 or state["step"] == config.max_steps
                             or out_of_time)
            if not at_validation and not stop_signal.requested:
                continue
            state["elapsed_s"] = time.monotonic() - started
            stop = stop_signal.requested
            if distributed.is_main:
                row = _validate_and_save(run, state, train_loss=float(np.mean(losses)), rate=rate)
                losses.clear()
                if on_validation:
                    on_validation(state["step"], row)
                stop = stop or _should_stop(config, state)
            if distributed.broadcast_flag(stop):
                break
        # DDP's reducer holds work on the process group: free it before the group is torn down, or a gloo
        # thread can outlive it and abort the process at exit.
        del trainable
    return state


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_learning_rate`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.final_learning_rate + (config.learning_rate - config.final_learning_rate) * cosine


def spectra_batch(noisy: torch.Tensor, target: torch.Tensor, *, noise_floor: bool, crop_frames: int | None = None,
                  floor_from_noise_examples: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Waveforms ``(batch, samples)`` -> model input ``(batch, 1 + noise_floor, BINS, frames)`` and the noisy
    and target complex STFTs ``(batch, 1, BINS, frames)`` (what :func:`spectral_loss` takes).

    The input is computed over every frame (so a noise floor sees the whole context), then all three are
    cut to the centre ``crop_frames`` frames when given. The first ``floor_from_noise_examples`` examples
    take their noise floor from their noise alone (``noisy - target``).
    """
    noisy_spectrum, target_spectrum = spectral.stft(noisy).unsqueeze(1), spectral.stft(target).unsqueeze(1)
    floor = None
    if noise_floor and floor_from_noise_examples:
        floor = spectral.noise_floor(noisy_spectrum[:, 0].abs())
        given = slice(0, floor_from_noise_examples)
        floor[given] = spectral.noise_floor((noisy_spectrum[given, 0] - target_spectrum[given, 0]).abs())
    features = spectral.features(noisy_spectrum[:, 0].abs(), noise_floor=noise_floor, floor=floor)
    if crop_frames is not None and crop_frames < features.shape[-1]:
        first = (features.shape[-1] - crop_frames) // 2
        window = slice(first, first + crop_frames)
        features, noisy_spectrum, target_spectrum = (
            features[..., window], noisy_spectrum[..., window], target_spectrum[..., window])
    # channels_last makes oneDNN's convolutions 2-3x faster for this narrow network on CPU.
    return features.contiguous(memory_format=torch.channels_last), noisy_spectrum, target_spectrum


def validate(model: UNet, noisy: torch.Tensor, target: torch.Tensor, *,
             floor_from_noise: bool = False) -> dict[str, float]:
    """Scores on fixed pairs ``(count, samples)``: the loss, and the output of the real inference path
    (tiles, overlap-add) against the targets. With ``floor_from_noise`` (and a model with a noise-floor
    input) each pair's floor is measured on its noise alone, ``noisy - target``, as ``--noise-sample`` gives it."""
    model.eval()
    floor_from_noise = floor_from_noise and model.config.noise_floor_input
    with torch.no_grad():
        features, noisy_spectrum, target_spectrum = spectra_batch(
            noisy, target, noise_floor=model.config.noise_floor_input,
            floor_from_noise_examples=len(noisy) if floor_from_noise else 0)
        loss = float(spectral_loss(model(features), noisy_spectrum, target_spectrum))
    # float32, so that the scores that pick ``best`` do not depend on the machine.
    denoiser = Denoiser(copy.deepcopy(model), device="cpu", precision="float32")
    noisy_np, target_np = noisy.numpy(), target.numpy()
    # Unrelated pairs, eight at a time as the channels of one array (each channel gets its own mask).
    # Each pair's floor as training measures it (the pairs may be shorter than a noise clip must be).
    floors = spectral.noise_floor(spectral.stft(noisy - target).abs()) if floor_from_noise else None
    outputs = []
    for start in range(0, len(noisy_np), 8):
        batch = slice(start, start + 8)
        outputs.append(denoiser.denoise(noisy_np[batch], MODEL_SAMPLE_RATE, strength_db=DEFAULT_STRENGTH_DB,
                                        noise_floor=None if floors is None else floors[batch]))
    outputs = np.concatenate(outputs)
    si_out = [si_sdr(t, o) for t, o in zip(target_np, outputs)]
    si_in = [si_sdr(t, n) for t, n in zip(target_np, noisy_np)]
    # Least-squares gain of the output onto the target: a global level slip shows here, not in SI-SDR.
    gain = (outputs * target_np).sum() / (target_np**2).sum()
    return {
        "val_loss": loss,
        "val_si_sdr_db": float(np.mean(si_out)),
        "val_si_sdr_improvement_db": float(np.mean(np.subtract(si_out, si_in))),
        "val_lsd_f80_db": float(np.mean([lsd(t, o, floor_db=80) for t, o in zip(target_np, outputs)])),
        "val_gain_db": float(20 * np.log10(max(gain, 1e-6))),
    }


@dataclass
class _Run:
    """What a run trains and keeps: its model, optimiser and weight average, its music and fixed
    validation pairs ``(count, samples)``, and the training description every saved model carries."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    model: UNet
    optimizer: torch.optim.Optimizer
    average: AveragedModel | None
    train_sources: list[Source]
    noises: list[np.ndarray]
    validation: tuple[torch.Tensor, torch.Tensor]
    metadata: dict
    #: The forward and backward passes' arithmetic (``config.precision`` on this device).
    compute_dtype: torch.dtype
    #: ``config.teacher``'s network, in evaluation mode, or None.
    teacher: UNet | None = None


def _prepare(config: TrainConfig, distributed: "_Distributed", *, resume: bool) -> _Run:
    """The run's music, validation pairs and model (from ``init_from`` unless a run is resumed); rank 0
    records the music in ``sources.json``."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = Path(config.corpus_dir)
    train_sources = scan_sources(corpus_files(corpus, "train"), split="train", origin=str(corpus))
    validation_sources = scan_sources(corpus_files(corpus, "validation"), split="validation", origin=str(corpus))
    noises = load_noise_recordings(find_audio_files(config.noise_dir)) if config.noise_dir else []
    if distributed.is_main:
        run_files.save_sources(run_dir, train=[source.path for source in train_sources],
                               validation=[source.path for source in validation_sources])
    validation = fixed_examples(validation_sources, config=config.pairs, frames=config.validation_crop_frames,
                                count=config.validation_examples, seed=VALIDATION_SEED_OFFSET + config.seed,
                                noises=noises)
    model = UNet(config.model)
    if config.init_from and not (resume and (run_dir / "latest.safetensors").exists()):
        run_files.initialise_from(model, Path(config.init_from))
    model = model.to(distributed.device, memory_format=torch.channels_last)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.weight_average_decay))
               if config.weight_average_decay else None)
    metadata = {"training": {
        "config": dataclasses.asdict(config), "train_files": len(train_sources),
        "train_minutes": round(sum(s.frames for s in train_sources) / MODEL_SAMPLE_RATE / 60, 1),
        "parameters": parameter_count(model),
    }}
    teacher = None
    if config.teacher:
        teacher = load_model(Path(config.teacher))[0].eval().to(distributed.device, memory_format=torch.channels_last)
        if teacher.config.noise_floor_input != config.model.noise_floor_input:
            raise ValueError(f"{config.teacher}: the teacher's noise-floor input ({teacher.config.noise_floor_input}) "
                             f"must match the model's ({config.model.noise_floor_input})")
    return _Run(config, run_dir, distributed.device, model, torch.optim.Adam(model.parameters(), lr=config.learning_rate),
                average, train_sources, noises, validation, metadata,
                resolve_precision(config.precision, distributed.device), teacher)


def _start_or_resume(run: _Run, *, resume: bool, is_main: bool) -> dict:
    if resume and (run.run_dir / "latest.safetensors").exists():
        state = run_files.load_state(run.run_dir, run.model, run.optimizer, average=run.average)
        log.info("resumed at step %d", state["step"])
        return state
    if is_main:
        run_files.start_log(run.run_dir)
    return {"step": 0, "best_val_si_sdr_db": -math.inf, "stale_validations": 0, "elapsed_s": 0.0}


def _batches(config: TrainConfig, sources: list[Source], noises: list[np.ndarray], *, rank: int,
             start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    dataset = TrainingPairs(sources, config=config.pairs, frames=config.example_frames, seed=config.seed, rank=rank,
                            start_step=start_step, noises=noises)
    return iter(DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers,
                           persistent_workers=config.workers > 0))


def _step(trainable: torch.nn.Module, run: _Run, noisy: torch.Tensor, target: torch.Tensor, *, rate: float) -> float:
    """One optimiser step on a batch of waveforms ``(batch, samples)``; returns the loss."""
    config = run.config
    trainable.train()
    features, noisy_spectrum, target_spectrum = spectra_batch(
        noisy, target, noise_floor=config.model.noise_floor_input, crop_frames=config.crop_frames,
        floor_from_noise_examples=config.floor_from_noise_examples)
    for group in run.optimizer.param_groups:
        group["lr"] = rate
    with reduced_precision(run.device, run.compute_dtype):
        logits = trainable(features, logits=True).float()
    loss = spectral_loss(torch.sigmoid(logits), noisy_spectrum, target_spectrum)
    if run.teacher is not None:
        with torch.no_grad(), reduced_precision(run.device, run.compute_dtype):
            teacher_logits = run.teacher(features, logits=True).float()
        loss = loss + config.teacher_weight * teacher_loss(logits, teacher_logits, limit=config.logit_limit)
    if config.logit_penalty:
        loss = loss + config.logit_penalty * logit_penalty(logits, limit=config.logit_limit)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.gradient_clip_norm)
    run.optimizer.step()
    if run.average is not None:
        run.average.update_parameters(run.model)
    return loss.item()


def _validate_and_save(run: _Run, state: dict, *, train_loss: float, rate: float) -> dict:
    """Score the model (the average when there is one: what ``best`` and ``steps/`` hold), log the row, and
    write ``best`` (if it improved), ``latest`` and ``steps/``; returns the row."""
    scored = run.model if run.average is None else run.average.module
    row = {"step": state["step"], "elapsed_s": round(state["elapsed_s"], 1), "learning_rate": rate,
           "train_loss": train_loss, **validate(scored.cpu(), *run.validation,
                                        floor_from_noise=run.config.validation_floor_from_noise)}
    scored.to(run.device)
    run_files.append_log(run.run_dir, row)
    log.info("step %d: loss %.4f, validation SI-SDR %.2f dB", row["step"], train_loss, row["val_si_sdr_db"])
    described = {**run.metadata, "validation": row}
    if row["val_si_sdr_db"] > state["best_val_si_sdr_db"]:
        state["best_val_si_sdr_db"], state["stale_validations"] = row["val_si_sdr_db"], 0
        save_model(run.run_dir / "best.safetensors", scored, metadata=described)
    else:
        state["stale_validations"] += 1
    run_files.save_state(run.run_dir, run.model, run.optimizer, state, metadata=described, average=run.average)
    if run.config.keep_every_validation:
        (run.run_dir / "steps").mkdir(exist_ok=True)
        save_model(run.run_dir / "steps" / f"step{state['step']:06d}.safetensors", scored, metadata=described)
    return row


def _should_stop(config: TrainConfig, state: dict) -> bool:
    """Validation has stopped improving, or the run's time is up."""
    out_of_time = bool(config.max_minutes and state["elapsed_s"] > config.max_minutes * 60)
    return state["stale_validations"] >= config.patience_validations or out_of_time


class _StopOnSigterm:
    """Within the block, SIGTERM asks the loop to stop at the next step (``requested``) instead of killing it,
    so that the run saves ``latest`` and can be resumed."""

    def __enter__(self) -> "_StopOnSigterm":
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._request)
        return self

    def _request(self, *_) -> None:
        self.requested = True

    def __exit__(self, *_) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class _Distributed:
    """Device, rank and world size under torchrun; a single process otherwise. Leaving the block closes the group."""

    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.device = device
        if self.world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.rank = dist.get_rank()
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([int(flag)])
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def __enter__(self) -> "_Distributed":
        return self

    def __exit__(self, *_) -> None:
        if self.world_size > 1:
            # Let every rank finish its last collective before any tears the group down: a gloo peer
            # that vanishes mid-operation aborts the other process.
            dist.barrier()
            dist.destroy_process_group()
            # Free what still refers to the group now, while the interpreter is whole: freed during its
            # finalisation instead, gloo's threads can abort the process after the run has succeeded.
            gc.collect()
