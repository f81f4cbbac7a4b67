"""Training: on-the-fly examples, Adam with warm-up and cosine decay, validation, checkpoints, resume.

:func:`train` reads top to bottom: data → model and optimiser → (resume) → a loop of steps, with a
validation every ``validate_every_steps`` that writes ``latest`` and, when the validation SI-SDR
improves, ``best`` (files: :mod:`cassette_denoise.training.state`). Runs on one process or, under
``torchrun``, as DistributedDataParallel (gloo on CPU, NCCL on GPUs); only rank 0 validates, logs and saves.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import signal
import time
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
from cassette_denoise.checkpoint import save_model
from cassette_denoise.corpus.manifest import corpus_files
from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser, resolve_device
from cassette_denoise.metrics import lsd, si_sdr
from cassette_denoise.model import UNet, parameter_count
from cassette_denoise.training import state as run_files
from cassette_denoise.training.config import TrainConfig
from cassette_denoise.training.examples import (
    Source,
    TrainingPairs,
    fixed_examples,
    load_noise_recordings,
    scan_sources,
)
from cassette_denoise.training.losses import logit_penalty, spectral_loss

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
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_sources, validation_sources, noises = _load_sources(config, save_to=run_dir if distributed.is_main else None)
    validation = fixed_examples(validation_sources, config=config.pairs, frames=config.validation_crop_frames,
                                count=config.validation_examples, seed=VALIDATION_SEED_OFFSET + config.seed,
                                noises=noises)
    model, optimizer, average = _build_model(config, distributed.device, resume=resume)
    state = _start_or_resume(run_dir, model, optimizer, average, resume=resume, is_main=distributed.is_main)
    batches = _batches(config, train_sources, noises, rank=distributed.rank, start_step=state["step"])
    trainable = DistributedDataParallel(model) if distributed.world_size > 1 else model
    metadata = {"training": {
        "config": dataclasses.asdict(config), "train_files": len(train_sources),
        "train_minutes": round(sum(s.frames for s in train_sources) / MODEL_SAMPLE_RATE / 60, 1),
        "parameters": parameter_count(model),
    }}
    started, losses = time.monotonic() - state["elapsed_s"], []
    with _StopOnSigterm() as stop_signal, distributed:
        while state["step"] < config.max_steps:
            noisy, target = (tensor.to(distributed.device) for tensor in next(batches))
            rate = learning_rate_at(state["step"], config)
            losses.append(_step(trainable, optimizer, average, noisy, target, config=config, rate=rate))
            state["step"] += 1
            if on_step and distributed.is_main:
                on_step(state["step"], losses[-1])
            at_validation = state["step"] % config.validate_every_steps == 0 or state["step"] == config.max_steps
            if not at_validation and not stop_signal.requested:
                continue
            state["elapsed_s"] = time.monotonic() - started
            stop = stop_signal.requested
            if distributed.is_main:
                row = {"step": state["step"], "elapsed_s": round(state["elapsed_s"], 1), "learning_rate": rate,
                       "train_loss": float(np.mean(losses))}
                losses.clear()
                _validate_and_save(run_dir, model, optimizer, average, validation, row, state,
                                   config=config, metadata=metadata, device=distributed.device)
                if on_validation:
                    on_validation(state["step"], row)
                stop = stop or _should_stop(config, state)
            if distributed.broadcast_flag(stop):
                break
    return state


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_learning_rate`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.final_learning_rate + (config.learning_rate - config.final_learning_rate) * cosine


def spectra_batch(noisy: torch.Tensor, target: torch.Tensor, *, noise_floor: bool,
                  crop_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Waveforms ``(batch, samples)`` -> model input ``(batch, 1 + noise_floor, BINS, frames)`` and the noisy
    and target complex STFTs ``(batch, 1, BINS, frames)`` (what :func:`spectral_loss` takes).

    The input is computed over every frame (so a noise floor sees the whole context), then all three are
    cut to the centre ``crop_frames`` frames when given.
    """
    noisy_spectrum, target_spectrum = spectral.stft(noisy).unsqueeze(1), spectral.stft(target).unsqueeze(1)
    features = spectral.features(noisy_spectrum[:, 0].abs(), noise_floor=noise_floor)
    if crop_frames is not None and crop_frames < features.shape[-1]:
        first = (features.shape[-1] - crop_frames) // 2
        window = slice(first, first + crop_frames)
        features, noisy_spectrum, target_spectrum = (
            features[..., window], noisy_spectrum[..., window], target_spectrum[..., window])
    # channels_last makes oneDNN's convolutions 2-3x faster for this narrow network on CPU.
    return features.contiguous(memory_format=torch.channels_last), noisy_spectrum, target_spectrum


def validate(model: UNet, noisy: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Scores on fixed pairs ``(count, samples)``: the loss, and the output of the real inference path
    (tiles, overlap-add) against the targets."""
    model.eval()
    with torch.no_grad():
        features, noisy_spectrum, target_spectrum = spectra_batch(noisy, target,
                                                                  noise_floor=model.config.noise_floor_input)
        loss = float(spectral_loss(model(features), noisy_spectrum, target_spectrum))
    denoiser = Denoiser(copy.deepcopy(model), device="cpu")
    noisy_np, target_np = noisy.numpy(), target.numpy()
    # Unrelated pairs, eight at a time as the channels of one array (each channel gets its own mask).
    outputs = np.concatenate([denoiser.denoise(noisy_np[start: start + 8], MODEL_SAMPLE_RATE,
                                               strength_db=DEFAULT_STRENGTH_DB)
                              for start in range(0, len(noisy_np), 8)])
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


def _load_sources(config: TrainConfig, *, save_to: Path | None) -> tuple[list[Source], list[Source], list[np.ndarray]]:
    """The run's clean train and validation music and its blank-tape recordings; ``save_to`` gets ``sources.json``."""
    corpus = Path(config.corpus_dir)
    train_sources = scan_sources(corpus_files(corpus, "train"), split="train")
    validation_sources = scan_sources(corpus_files(corpus, "validation"), split="validation")
    noises = load_noise_recordings(find_audio_files(config.noise_dir)) if config.noise_dir else []
    if save_to is not None:
        run_files.save_sources(save_to, train=[source.path for source in train_sources],
                               validation=[source.path for source in validation_sources])
    return train_sources, validation_sources, noises


def _build_model(config: TrainConfig, device: torch.device, *, resume: bool):
    """The model (from ``init_from`` unless a run is resumed), its Adam optimiser and its weight average."""
    model = UNet(config.model)
    if config.init_from and not (resume and (Path(config.run_dir) / "latest.safetensors").exists()):
        run_files.initialise_from(model, Path(config.init_from))
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.weight_average_decay))
               if config.weight_average_decay else None)
    return model, optimizer, average


def _start_or_resume(run_dir: Path, model, optimizer, average, *, resume: bool, is_main: bool) -> dict:
    if resume and (run_dir / "latest.safetensors").exists():
        state = run_files.load_state(run_dir, model, optimizer, average=average)
        log.info("resumed at step %d", state["step"])
        return state
    if is_main:
        run_files.start_log(run_dir)
    return {"step": 0, "best_val_si_sdr_db": -math.inf, "stale_validations": 0, "elapsed_s": 0.0}


def _batches(config: TrainConfig, sources: list[Source], noises: list[np.ndarray], *, rank: int,
             start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    dataset = TrainingPairs(sources, config=config.pairs, frames=config.example_frames, seed=config.seed, rank=rank,
                            start_step=start_step, noises=noises)
    return iter(DataLoader(dataset, batch_size=config.batch_size, num_workers=config.workers,
                           persistent_workers=config.workers > 0))


def _step(trainable, optimizer, average, noisy: torch.Tensor, target: torch.Tensor, *, config: TrainConfig,
          rate: float) -> float:
    """One optimiser step on a batch of waveforms ``(batch, samples)``; returns the loss."""
    trainable.train()
    features, noisy_spectrum, target_spectrum = spectra_batch(
        noisy, target, noise_floor=config.model.noise_floor_input, crop_frames=config.crop_frames)
    for group in optimizer.param_groups:
        group["lr"] = rate
    logits = trainable(features, logits=True)
    loss = spectral_loss(torch.sigmoid(logits), noisy_spectrum, target_spectrum)
    if config.logit_penalty:
        loss = loss + config.logit_penalty * logit_penalty(logits, limit=config.logit_limit)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable.parameters(), config.gradient_clip_norm)
    optimizer.step()
    if average is not None:
        average.update_parameters(trainable.module if isinstance(trainable, DistributedDataParallel) else trainable)
    return loss.item()


def _validate_and_save(run_dir: Path, model: UNet, optimizer, average, validation, row: dict, state: dict, *,
                       config: TrainConfig, metadata: dict, device: torch.device) -> None:
    """Score the model (the average when there is one: what ``best`` and ``steps/`` hold) into ``row``,
    log it, and write ``best`` (if it improved), ``latest`` and ``steps/``."""
    scored = model if average is None else average.module
    row.update(validate(scored.cpu(), *validation))
    scored.to(device)
    run_files.append_log(run_dir, row)
    log.info("step %d: loss %.4f, validation SI-SDR %.2f dB", row["step"], row["train_loss"], row["val_si_sdr_db"])
    described = {**metadata, "validation": row}
    if row["val_si_sdr_db"] > state["best_val_si_sdr_db"]:
        state["best_val_si_sdr_db"], state["stale_validations"] = row["val_si_sdr_db"], 0
        save_model(run_dir / "best.safetensors", scored, metadata=described)
    else:
        state["stale_validations"] += 1
    run_files.save_state(run_dir, model, optimizer, state, metadata=described, average=average)
    if config.keep_every_validation:
        (run_dir / "steps").mkdir(exist_ok=True)
        save_model(run_dir / "steps" / f"step{state['step']:06d}.safetensors", scored, metadata=described)


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
