"""Shared fixtures: synthetic audio and a tiny randomly initialised model (no trained weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cassette_denoise.checkpoint import save_model
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNet, UNetConfig

SEED_CASSETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-cassette"


def music_like(channels: int, samples: int, sample_rate: int, *, seed: int = 0) -> np.ndarray:
    """Band-limited tones with a slow envelope plus a little noise, float32 ``(channels, samples)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    out = np.zeros((channels, samples))
    for channel in range(channels):
        for frequency in rng.uniform(110, min(6000, sample_rate / 3), size=5):
            out[channel] += np.sin(2 * np.pi * frequency * t + rng.uniform(0, 6.3)) * rng.uniform(0.02, 0.08)
        out[channel] *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t + channel)
    return out.astype(np.float32)


def stream_in_random_blocks(stream, audio: np.ndarray, *, max_block: int, seed: int) -> np.ndarray:
    """Feed ``audio`` ``(channels, samples)`` to a denoise stream in blocks of 1 … ``max_block`` samples drawn
    from ``seed``; the concatenated output, ``finish()`` included."""
    rng = np.random.default_rng(seed)
    pieces, start = [], 0
    while start < audio.shape[1]:
        size = int(rng.integers(1, max_block))
        pieces.append(stream.process(audio[:, start: start + size]))
        start += size
    return np.concatenate([*pieces, stream.finish()], axis=1)


@pytest.fixture(scope="session")
def pass_through_model() -> UNet:
    """A model whose mask is 1 everywhere (sigmoid of a huge bias): isolates the signal path."""
    model = UNet(UNetConfig(base_width=2))
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.constant_(model.head.bias, 50.0)
    return model.eval()


@pytest.fixture(scope="session")
def random_model() -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(base_width=2)).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, random_model) -> Path:
    return save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", random_model)


@pytest.fixture()
def denoiser(random_model) -> Denoiser:
    return Denoiser(random_model, device="cpu")


@pytest.fixture(scope="session")
def music_folder(tmp_path_factory) -> Path:
    """Five 4 s stereo 44.1 kHz FLAC files of :func:`music_like` audio: a corpus without a manifest."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("music")
    for index in range(5):
        sf.write(folder / f"{index}.flac", music_like(2, 44100 * 4, 44100, seed=index).T, 44100)
    return folder


def tiny_config(corpus: Path, run_dir: Path, **overrides):
    """A training run of a few seconds: a width-2 single-input model, 4 steps, 2 validations."""
    from cassette_denoise.training import TrainConfig

    settings = dict(corpus_dir=str(corpus), run_dir=str(run_dir), model=UNetConfig(base_width=2), batch_size=2,
                    crop_frames=32, context_frames=32, validation_crop_frames=32, max_steps=4, validate_every_steps=2,
                    validation_examples=2, warmup_steps=1, workers=0, device="cpu")
    return TrainConfig(**{**settings, **overrides})
