"""``cassette-denoise adapt``: a real run through the installed command writes a model that ``denoise`` loads,
resumes, refuses bad noise and a run folder in the way, and says what to install for the default music."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cassette_denoise.adapt import AdaptConfig, adapt_train_config, hold_out_music
from cassette_denoise.checkpoint import save_model
from cassette_denoise.corpus import load_manifest
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNet, UNetConfig

from conftest import music_like, tiny_config

CONSOLE_SCRIPT = Path(sys.executable).with_name("cassette-denoise")


def adapt_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), "adapt", *args, "--threads", "1"], capture_output=True, text=True,
                          timeout=180, env=env)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory, music_folder) -> Path:
    """A width-2 model whose sidecar carries a recipe of tiny examples, so that a step takes milliseconds."""
    model = UNet(UNetConfig(base_width=2, noise_floor_input=True))
    recipe = tiny_config(music_folder, "runs/tiny", model=model.config, context_frames=64)
    return save_model(tmp_path_factory.mktemp("start") / "start.safetensors", model, metadata={
        "training": {"config": dataclasses.asdict(recipe)}, "calibration": {"mask_exponent": 1.5}})


@pytest.fixture(scope="module")
def blank_tape(tmp_path_factory) -> Path:
    """24 s of stereo hiss and 50 Hz hum at 48 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(24 * 48000) / 48000
    noise = rng.standard_normal((2, t.size)) * 1e-3 + 2e-3 * np.sin(2 * np.pi * 50 * t)
    path = tmp_path_factory.mktemp("noise") / "lead-in.wav"
    sf.write(path, noise.T, 48000, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def own_music(tmp_path_factory) -> Path:
    """Three 6 s songs at 48 kHz, as a user's CD rips would be any format."""
    folder = tmp_path_factory.mktemp("rips")
    for index in range(3):
        sf.write(folder / f"song{index}.wav", music_like(2, 6 * 48000, 48000, seed=10 + index).T, 48000)
    return folder


def test_adapt_writes_a_model_that_denoise_and_from_pretrained_load(tmp_path, start_model, blank_tape, own_music):
    out = tmp_path / "my-deck.safetensors"
    done = adapt_command(str(blank_tape), "-o", str(out), "--music", str(own_music), "--model", str(start_model),
                         "--max-steps", "2", "--max-minutes", "2")
    assert done.returncode == 0, done.stderr
    assert "input SNR" in done.stdout and "2 steps" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[1:2] == ["dB"]]
    assert [row[0] for row in rows] == ["0", "10", "20"] and all(len(row) == 6 for row in rows)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    adapted = sidecar["adapted"]
    assert adapted["from"] == str(start_model) and adapted["steps"] == 2
    assert adapted["noise"] == [{"file": "lead-in.wav", "seconds": 24.0, "sample_rate": 48000, "channels": 2,
                                 "trained_seconds": 18.0}]
    assert [row["snr_db"] for row in adapted["held_out_si_sdr_db"]] == [0.0, 10.0, 20.0]
    assert sidecar["calibration"] == {"mask_exponent": 1.5}
    loaded = Denoiser.from_pretrained(out)
    assert loaded.mask_exponent == 1.5
    # It carries the floor of the blank tape as measured on the whole recording, averaged over its channels.
    tape, rate = sf.read(blank_tape, dtype="float32")
    expected = loaded.noise_floor(tape.T - tape.T.mean(axis=1, keepdims=True), rate).mean(dim=0)
    torch.testing.assert_close(loaded.carried_noise_floor[0], expected, rtol=0, atol=1e-3)
    assert "carries the noise floor of your blank tape" in done.stdout
    source = tmp_path / "tape.wav"
    sf.write(source, music_like(1, 44100, 44100)[0], 44100)
    denoised = subprocess.run([str(CONSOLE_SCRIPT), "denoise", str(source), "-o", str(tmp_path / "clean.wav"),
                               "--model", str(out)], capture_output=True, text=True, timeout=120)
    assert denoised.returncode == 0, denoised.stderr
    assert not list(tmp_path.glob(".*.partial"))


def test_resume_continues_the_run_and_a_run_folder_is_never_overwritten(tmp_path, start_model, blank_tape,
                                                                        music_folder):
    out = tmp_path / "deck.safetensors"
    common = (str(blank_tape), "-o", str(out), "--corpus", str(music_folder), "--model", str(start_model))
    assert adapt_command(*common, "--max-steps", "2").returncode == 0
    again = adapt_command(*common, "--max-steps", "4")
    assert again.returncode == 2 and "deck.adapt: holds an earlier adapt run; continue it with --resume" in again.stderr
    resumed = adapt_command(*common, "--max-steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(out.with_suffix(".json").read_text())["adapted"]["steps"] == 4
    log = (tmp_path / "deck.adapt" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["2", "4"]


def test_a_tiny_time_limit_stops_training_after_a_step_and_still_scores(tmp_path, start_model, blank_tape,
                                                                        music_folder):
    done = adapt_command(str(blank_tape), "-o", str(tmp_path / "quick"), "--corpus", str(music_folder),
                         "--model", str(start_model), "--max-minutes", "0.01")
    assert done.returncode == 0, done.stderr
    sidecar = json.loads((tmp_path / "quick.json").read_text())
    assert sidecar["adapted"]["steps"] >= 1 and len(sidecar["adapted"]["held_out_si_sdr_db"]) == 3


def test_music_in_the_noise_is_one_line_naming_the_file_with_exit_code_1(tmp_path, music_folder):
    song = tmp_path / "song.wav"
    sf.write(song, np.tile(music_like(2, 44100 * 5, 44100), 5).T, 44100)
    done = adapt_command(str(song), "-o", str(tmp_path / "x.safetensors"), "--corpus", str(music_folder))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"cassette-denoise adapt: error: {song}: holds music")


def test_without_music_tools_the_error_names_music_dir_and_what_to_install(tmp_path, blank_tape, start_model):
    env = {**os.environ, "PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = adapt_command(str(blank_tape), "-o", str(tmp_path / "x.safetensors"), "--model", str(start_model), env=env)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "fluidsynth" in errors[0] and "--music DIR" in errors[0]


def test_a_model_file_is_named_safetensors(tmp_path, blank_tape, music_folder):
    done = adapt_command(str(blank_tape), "-o", str(tmp_path / "deck.wav"), "--corpus", str(music_folder))
    assert done.returncode == 2 and "deck.wav: a model is written as NAME.safetensors" in done.stderr


def test_a_built_music_folder_always_holds_a_piece_out(tmp_path, own_music):
    from cassette_denoise.corpus import build_corpus

    build_corpus(tmp_path / "music", split="train", max_music21=0, seed=0, user_dir=own_music, soundtracks=())
    hold_out_music(tmp_path / "music", origin="test")
    splits = [entry.split for entry in load_manifest(tmp_path / "music")]
    assert splits.count("validation") >= 1 and splits.count("train") >= 1


def fine_tune_config(start_sidecar: dict, tmp_path: Path):
    """What ``adapt`` would train for a starting model with this sidecar: 5 minutes, defaults otherwise."""
    return adapt_train_config(start_sidecar, UNetConfig(base_width=8, noise_floor_input=True),
                              run_dir=tmp_path / "run", corpus_dir=tmp_path, init_from=tmp_path / "start.safetensors",
                              config=AdaptConfig(), max_steps=None, max_minutes=5.0, threads=2, seed=3, device="cpu")


def test_the_fine_tune_is_the_starting_models_recipe_with_the_users_noise_in_most_examples(tmp_path):
    recipe = json.loads((Path(__file__).parents[1] / "src/cassette_denoise/weights"
                         / "cassette-unet-w8-treble-stronger.json").read_text())
    config = fine_tune_config(recipe, tmp_path)
    assert config.pairs.recorded_noise_alone_probability == AdaptConfig().recorded_noise_share > 0.5
    assert config.pairs.recorded_noise_probability == 0.0
    assert config.pairs.noise_follows_treble_probability == 0.9  # the recipe's last stage, kept
    assert config.noise_dir == str(tmp_path / "run" / "noise") and config.weight_average_decay > 0
    assert config.learning_rate == config.final_learning_rate and config.max_minutes == 5.0


def test_the_fine_tune_gives_every_example_and_validation_pair_its_noise_floor_when_the_model_takes_one(tmp_path):
    config = fine_tune_config({}, tmp_path)
    assert config.floor_from_noise_examples == config.batch_size and config.validation_floor_from_noise
    for model, adapt_config in ((UNetConfig(base_width=8), AdaptConfig()),
                                (UNetConfig(base_width=8, noise_floor_input=True), AdaptConfig(noise_floor_given=False))):
        config = adapt_train_config({}, model, run_dir=tmp_path / "run", corpus_dir=tmp_path,
                                    init_from=tmp_path / "start.safetensors", config=adapt_config, max_steps=None,
                                    max_minutes=5.0, threads=2, seed=3, device="cpu")
        assert config.floor_from_noise_examples == 0 and not config.validation_floor_from_noise


def test_the_fine_tune_leaves_out_a_teacher_the_starting_model_learnt_from(tmp_path):
    recipe = {"training": {"config": {"teacher": "runs/stage7/steps/step002000.safetensors", "teacher_weight": 2.0}}}
    assert fine_tune_config(recipe, tmp_path).teacher == ""
