"""Training runs: a short run learns, writes its files, reports each step and resumes; 2-process DDP."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cassette_denoise import spectral
from cassette_denoise.model import UNet, UNetConfig
from cassette_denoise.training import PairConfig, train
from cassette_denoise.training.examples import fixed_examples, scan_sources
from cassette_denoise.training.loop import spectra_batch, validate
from cassette_denoise.training.losses import spectral_loss
from cassette_denoise.training.state import initialise_from

from conftest import tiny_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_a_short_run_on_one_batch_lowers_the_loss(music_folder):
    torch.manual_seed(0)
    sources = scan_sources(sorted(music_folder.glob("*.flac")), split="train")
    noisy, target = fixed_examples(sources, config=PairConfig(preset="good-deck-type-ii"), frames=32, count=2, seed=0)
    features, noisy_spectrum, target_spectrum = spectra_batch(noisy, target, noise_floor=True)
    model = UNet(UNetConfig(base_width=2, dropout=0.0, noise_floor_input=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = spectral_loss(model(features), noisy_spectrum, target_spectrum)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1 * abs(losses[0])


def test_spectra_batch_measures_the_floor_over_the_context_then_crops_the_centre():
    samples = 63 * spectral.HOP + spectral.N_FFT
    noisy, target = torch.randn(2, samples), torch.randn(2, samples)
    full, _, _ = spectra_batch(noisy, target, noise_floor=True)
    cropped, noisy_spectrum, target_spectrum = spectra_batch(noisy, target, noise_floor=True, crop_frames=32)
    assert cropped.shape == (2, 2, spectral.BINS, 32)
    assert noisy_spectrum.shape == target_spectrum.shape == (2, 1, spectral.BINS, 32)
    torch.testing.assert_close(cropped, full[..., 16:48])


def test_the_first_examples_of_a_batch_can_take_their_floor_from_their_noise_alone():
    samples = 63 * spectral.HOP + spectral.N_FFT
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(3, samples, generator=generator)
    noisy = target + 0.01 * torch.randn(3, samples, generator=generator)
    own, noisy_spectrum, target_spectrum = spectra_batch(noisy, target, noise_floor=True)
    mixed, _, _ = spectra_batch(noisy, target, noise_floor=True, floor_from_noise_examples=2)
    noise_floor = spectral.noise_floor((noisy_spectrum - target_spectrum)[:, 0].abs())
    torch.testing.assert_close(mixed[:2, 1, :, 0], noise_floor[:2])
    assert torch.equal(mixed[2], own[2]) and torch.equal(mixed[:, 0], own[:, 0])
    assert torch.all(mixed[:2, 1] < own[:2, 1])  # the noise alone sits far under noisy music


def test_validation_with_the_floor_from_the_noise_scores_the_denoiser_given_each_pairs_noise_floor():
    from cassette_denoise.denoiser import Denoiser
    from cassette_denoise.metrics import si_sdr

    samples = 255 * spectral.HOP + spectral.N_FFT
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(3, samples, generator=generator) * 0.1
    noisy = target + 0.02 * torch.randn(3, samples, generator=generator)
    torch.manual_seed(2)
    model = UNet(UNetConfig(base_width=2, noise_floor_input=True))
    given, own = validate(model, noisy, target, floor_from_noise=True), validate(model, noisy, target)
    floors = spectral.noise_floor(spectral.stft(noisy - target).abs())
    outputs = Denoiser(model, device="cpu", precision="float32").denoise(noisy.numpy(), 44100, noise_floor=floors)
    expected = sum(si_sdr(t, o) for t, o in zip(target.numpy(), outputs)) / 3
    assert given["val_si_sdr_db"] == pytest.approx(expected, abs=1e-9)
    assert given["val_si_sdr_db"] != own["val_si_sdr_db"] and given["val_loss"] != own["val_loss"]


def test_training_writes_checkpoints_log_and_curve_reports_each_step_and_resumes(music_folder, tmp_path):
    steps, validations = [], []
    state = train(tiny_config(music_folder, tmp_path / "run"), on_step=lambda step, loss: steps.append(step),
                  on_validation=lambda step, row: validations.append(row["val_si_sdr_db"]))
    assert state["step"] == 4 and steps == [1, 2, 3, 4] and len(validations) == 2
    for name in ("best.safetensors", "best.json", "latest.safetensors", "latest.optimizer.safetensors", "log.csv",
                 "curve.png", "sources.json", "steps/step000002.safetensors"):
        assert (tmp_path / "run" / name).exists(), name
    assert not list((tmp_path / "run").glob(".*.partial"))
    sidecar = json.loads((tmp_path / "run" / "best.json").read_text())
    assert sidecar["training"]["config"]["model"]["base_width"] == 2 and "validation" in sidecar
    state = train(tiny_config(music_folder, tmp_path / "run", max_steps=6), resume=True)
    assert state["step"] == 6
    with open(tmp_path / "run" / "log.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["2", "4", "6"]


def test_a_run_starts_from_a_checkpoint_of_the_same_model_and_refuses_another(music_folder, tmp_path):
    floor = dict(model=UNetConfig(base_width=2, noise_floor_input=True), context_frames=64)
    train(tiny_config(music_folder, tmp_path / "base", max_steps=2, **floor))
    config = tiny_config(music_folder, tmp_path / "next", init_from=str(tmp_path / "base" / "best.safetensors"), **floor)
    assert train(config)["step"] == 4
    assert json.loads((tmp_path / "next" / "best.json").read_text())["config"]["noise_floor_input"] is True
    with pytest.raises(ValueError, match="cannot initialise"):
        initialise_from(UNet(UNetConfig(base_width=4)), tmp_path / "base" / "best.safetensors")


def test_a_corpus_without_validation_files_says_so(tmp_path):
    import soundfile as sf

    from conftest import music_like
    from cassette_denoise.audio import AudioError
    from cassette_denoise.corpus import CorpusEntry, save_manifest

    (tmp_path / "corpus").mkdir()
    sf.write(tmp_path / "corpus" / "a.flac", music_like(2, 44100 * 2, 44100).T, 44100)
    save_manifest(tmp_path / "corpus", [CorpusEntry(tmp_path / "corpus" / "a.flac", "train", "user", 2.0)])
    with pytest.raises(AudioError, match="corpus: no clean validation files"):
        train(tiny_config(tmp_path / "corpus", tmp_path / "run"))


def test_the_smoke_config_runs_as_two_process_gloo_ddp_from_the_command_line(music_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "cassette_denoise", "train", "--config", str(CONFIGS / "smoke.toml"),
         "--corpus-dir", str(music_folder), "--run-dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stderr[-8000:]
    assert (tmp_path / "ddp" / "best.safetensors").exists()
    assert "stopped at step 4" in result.stdout
    assert "4/4" in result.stderr and result.stderr.count("val SI-SDR") == 2  # rank 0's progress bar and validations
    with open(tmp_path / "ddp" / "log.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2  # only rank 0 logs


def test_the_train_command_names_a_missing_corpus_folder_and_a_corpus_without_validation_music(tmp_path, capsys):
    import soundfile as sf

    from cassette_denoise.cli import main
    from conftest import music_like

    smoke = ["train", "--config", str(CONFIGS / "smoke.toml"), "--run-dir", str(tmp_path / "run")]
    assert main([*smoke, "--corpus-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: corpus folder not found" in capsys.readouterr().err
    (tmp_path / "one").mkdir()
    sf.write(tmp_path / "one" / "a.flac", music_like(2, 44100 * 2, 44100).T, 44100)  # one file: all of it is train
    assert main([*smoke, "--corpus-dir", str(tmp_path / "one")]) == 1
    assert "one: no clean validation files" in capsys.readouterr().err


def test_a_run_out_of_time_stops_after_the_step_that_crossed_the_limit_and_saves_it(music_folder, tmp_path):
    validations = []
    config = tiny_config(music_folder, tmp_path / "run", max_steps=50, validate_every_steps=25, max_minutes=1e-6)
    state = train(config, on_validation=lambda step, row: validations.append(step))
    assert state["step"] == 1 and validations == [1]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 1


def test_a_bfloat16_run_trains_float32_weights_that_stay_finite(music_folder, tmp_path):
    from cassette_denoise.checkpoint import load_model

    config = tiny_config(music_folder, tmp_path / "run", precision="bfloat16",
                         model=UNetConfig(base_width=2, noise_floor_input=True))
    state = train(config)
    assert state["step"] == config.max_steps
    model, _ = load_model(tmp_path / "run" / "latest.safetensors")
    weights = list(model.parameters())
    assert all(weight.dtype == torch.float32 and torch.isfinite(weight).all() for weight in weights)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert all(float(row["train_loss"]) == float(row["train_loss"]) for row in rows)  # no NaN


def test_a_teacher_pulls_a_network_of_another_shape_towards_its_masks(music_folder, tmp_path):
    from cassette_denoise.checkpoint import load_model, save_model

    torch.manual_seed(1)
    # A teacher that masks far more than a new network starts out doing (its logits near -2, against +3).
    teacher = UNet(UNetConfig(base_width=2, noise_floor_input=True, initial_mask_logit=-2.0)).eval()
    teacher_path = save_model(tmp_path / "teacher.safetensors", teacher)
    student = dict(model=UNetConfig(base_width=2, levels=3, patch=2, noise_floor_input=True), context_frames=32,
                   max_steps=10, learning_rate=5e-2)
    train(tiny_config(music_folder, tmp_path / "alone", **student))
    train(tiny_config(music_folder, tmp_path / "taught", teacher=str(teacher_path), teacher_weight=10.0, **student))
    sources = scan_sources(sorted(music_folder.glob("*.flac")), split="train")
    noisy, target = fixed_examples(sources, config=PairConfig(), frames=32, count=2, seed=5)
    features = spectra_batch(noisy, target, noise_floor=True)[0]

    def mean_logit(model: UNet) -> float:
        with torch.no_grad():
            return model.eval()(features, logits=True).mean().item()

    alone, taught = (mean_logit(load_model(tmp_path / run / "latest.safetensors")[0]) for run in ("alone", "taught"))
    assert mean_logit(teacher) < taught < alone - 0.25
    with pytest.raises(ValueError, match="noise-floor input"):
        train(tiny_config(music_folder, tmp_path / "mismatch", teacher=str(teacher_path),
                          model=UNetConfig(base_width=2), context_frames=32))
