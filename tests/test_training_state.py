"""What a run leaves in its folder: weights copied exactly, the log read back, a weight average that resumes."""

import dataclasses

import pytest
import torch

from cassette_denoise.checkpoint import load_model, save_model
from cassette_denoise.model import UNet, UNetConfig
from cassette_denoise.training import train
from cassette_denoise.training.state import append_log, initialise_from, read_log, start_log

from conftest import tiny_config


def test_initialising_copies_the_weights_exactly(tmp_path):
    torch.manual_seed(0)
    source = UNet(UNetConfig(base_width=2)).eval()
    path = save_model(tmp_path / "source.safetensors", source)
    copy = UNet(UNetConfig(base_width=2))
    initialise_from(copy, path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(copy.state_dict()[name], tensor), name


def test_the_log_reads_back_what_was_appended_and_leaves_missing_values_out(tmp_path):
    start_log(tmp_path)
    append_log(tmp_path, {"step": 2, "train_loss": 0.5, "val_si_sdr_db": 12.25})
    append_log(tmp_path, {"step": 4, "train_loss": 0.25})
    assert read_log(tmp_path / "log.csv") == [{"step": 2.0, "train_loss": 0.5, "val_si_sdr_db": 12.25},
                                              {"step": 4.0, "train_loss": 0.25}]
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_a_weight_average_is_what_validation_and_checkpoints_hold_and_it_survives_a_resume(music_folder, tmp_path):
    # A decay this close to 1 holds the average at the weights after the first step, so every kept
    # checkpoint is (nearly) that model while the raw weights in latest move on.
    config = tiny_config(music_folder, tmp_path / "run", weight_average_decay=1 - 1e-9, validate_every_steps=1,
                         max_steps=2, keep_every_validation=True, learning_rate=1e-2)
    train(config)
    train(dataclasses.replace(config, max_steps=3), resume=True)
    steps = [load_model(tmp_path / "run" / "steps" / f"step{step:06d}.safetensors")[0].state_dict()
             for step in (1, 2, 3)]
    raw = load_model(tmp_path / "run" / "latest.safetensors")[0].state_dict()
    for name, first in steps[0].items():
        torch.testing.assert_close(steps[1][name], first, rtol=0, atol=1e-6)
        torch.testing.assert_close(steps[2][name], first, rtol=0, atol=1e-6)  # the resumed run kept the average
    assert max(float((raw[name] - steps[0][name]).abs().max()) for name in raw) > 1e-4  # the raw weights moved on
    with pytest.raises(ValueError, match="1.5"):
        dataclasses.replace(config, weight_average_decay=1.5)
