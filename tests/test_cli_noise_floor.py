"""``denoise --noise-sample FILE`` and ``--noise-from START-END``: time ranges, errors and exit codes, end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, strategies as st

from cassette_denoise.checkpoint import save_model
from cassette_denoise.cli import main
from cassette_denoise.cli.passage import Passage, format_time, parse_time_s
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNet, UNetConfig

from conftest import music_like

CONSOLE_SCRIPT = Path(sys.executable).with_name("cassette-denoise")


@pytest.fixture(scope="module")
def floor_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    model = UNet(UNetConfig(base_width=2, noise_floor_input=True)).eval()
    torch.nn.init.normal_(model.head.weight, std=3.0)  # a mask that depends on its input, the floor included
    torch.nn.init.zeros_(model.head.bias)
    return save_model(tmp_path_factory.mktemp("model") / "floor.safetensors", model)


def write(path: Path, audio: np.ndarray, sample_rate: int = 44100) -> Path:
    sf.write(path, audio.T, sample_rate, subtype="FLOAT")
    return path


def hiss(channels: int, seconds: float, sample_rate: int = 44100, *, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((channels, int(seconds * sample_rate))) * 0.01
    return noise.astype(np.float32)


def run(checkpoint, *args) -> int:
    try:
        return main(["denoise", "--model", str(checkpoint), "--device", "cpu", *map(str, args)])
    except SystemExit as exit:  # argparse's own usage errors
        return exit.code


@given(st.integers(min_value=0, max_value=100 * 3600 * 1000))
def test_formatted_times_read_back(millis):
    seconds = millis / 1000
    assert parse_time_s(format_time(seconds)) == pytest.approx(seconds, abs=1e-9)
    passage = Passage.parse(str(Passage(seconds, seconds + 1.25)))
    assert (passage.start_s, passage.end_s) == pytest.approx((seconds, seconds + 1.25), abs=1e-9)


@pytest.mark.parametrize("text,seconds", [
    ("12.5", 12.5), ("75", 75.0), ("0:05", 5.0), ("1:05.25", 65.25), ("90:00", 5400.0), ("1:02:03", 3723.0),
    ("0:00:00.5", 0.5), (" 3 ", 3.0),
])
def test_times_as_seconds_m_ss_or_h_mm_ss(text, seconds):
    assert parse_time_s(text) == seconds


@pytest.mark.parametrize("text", ["", "-3", "1:60", "1:5", "1:02:60", "1::02", "1:2:03", "abc", "1e3", "0:05.", "inf"])
def test_other_times_are_refused_naming_them(text):
    with pytest.raises(ValueError, match="is not a time"):
        parse_time_s(text)


@pytest.mark.parametrize("text", ["5", "0:00-0:05-0:10", "5-1", "2-2", "0-0.5", "0:00 to 0:05"])
def test_bad_passages_are_usage_errors_naming_the_value(tmp_path, floor_checkpoint, capsys, text):
    source = write(tmp_path / "a.wav", music_like(1, 44100 * 3, 44100))
    assert run(floor_checkpoint, source, "-o", tmp_path / "b.wav", "--noise-from", text) == 2
    assert repr(text) in capsys.readouterr().err
    assert not (tmp_path / "b.wav").exists()


def test_noise_sample_and_noise_from_exclude_each_other(tmp_path, floor_checkpoint, capsys):
    source = write(tmp_path / "a.wav", music_like(1, 44100 * 3, 44100))
    noise = write(tmp_path / "noise.wav", hiss(1, 2.0))
    assert run(floor_checkpoint, source, "-o", tmp_path / "b.wav", "--noise-sample", noise, "--noise-from", "0-2") == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("clip,message", [
    (None, "no such file"), (hiss(1, 0.5), "0.5 s long"), (np.zeros((2, 44100 * 2), np.float32), "digital silence"),
])
def test_an_unusable_noise_sample_is_a_usage_error_naming_it(tmp_path, floor_checkpoint, capsys, clip, message):
    source = write(tmp_path / "a.wav", music_like(1, 44100 * 3, 44100))
    noise = tmp_path / "noise.wav" if clip is None else write(tmp_path / "noise.wav", clip)
    assert run(floor_checkpoint, source, "-o", tmp_path / "b.wav", "--noise-sample", noise) == 2
    err = capsys.readouterr().err
    assert "--noise-sample" in err and "noise.wav" in err and message in err
    assert not (tmp_path / "b.wav").exists()


def test_a_model_without_a_noise_floor_input_is_a_usage_error(tmp_path, tiny_checkpoint, capsys):
    source = write(tmp_path / "a.wav", music_like(1, 44100 * 3, 44100))
    assert run(tiny_checkpoint, source, "-o", tmp_path / "b.wav", "--noise-from", "0-1.5") == 2
    assert "--noise-from: the model" in capsys.readouterr().err and not (tmp_path / "b.wav").exists()


def test_a_passage_past_the_end_fails_that_file_and_the_others_are_done(tmp_path, floor_checkpoint, capsys):
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "long.wav", music_like(1, int(44100 * 2.5), 44100))
    write(tmp_path / "in" / "short.wav", music_like(1, int(44100 * 1.5), 44100))
    assert run(floor_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out", "--noise-from", "0.5-2") == 1
    err = capsys.readouterr().err
    assert "short.wav: --noise-from 0:00.5-0:02: the passage ends after the file, which is 1.500 s long" in err
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == ["long.wav"]


def test_a_noise_sample_of_other_channels_fails_only_the_files_it_does_not_fit(tmp_path, floor_checkpoint, capsys):
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "stereo.wav", music_like(2, 44100 * 2, 44100))
    write(tmp_path / "in" / "three.wav", music_like(3, 44100 * 2, 44100))
    noise = write(tmp_path / "noise.wav", hiss(2, 1.5))
    assert run(floor_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out", "--noise-sample", noise) == 1
    assert "three.wav: the noise floor has 2 channels and the audio 3" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == ["stereo.wav"]


@pytest.mark.parametrize("option", ["--noise-sample", "--noise-from"])
def test_the_installed_command_denoises_with_the_floor_the_library_measures(tmp_path, floor_checkpoint, option):
    audio = music_like(2, 44100 * 4, 44100, seed=3) + hiss(2, 4.0, seed=4)
    audio[:, : 44100 * 2] = hiss(2, 2.0, seed=5)  # a lead-in of noise alone
    source = write(tmp_path / "tape.wav", audio)
    noise = hiss(1, 1.5, 48000, seed=6)
    value = str(write(tmp_path / "lead.wav", noise, 48000)) if option == "--noise-sample" else "0:00-0:02"
    done = subprocess.run([str(CONSOLE_SCRIPT), "denoise", str(source), "-o", str(tmp_path / "out.wav"), option, value,
                           "--model", str(floor_checkpoint), "--device", "cpu", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    denoiser = Denoiser.from_checkpoint(floor_checkpoint, device="cpu")
    floor = denoiser.noise_floor(noise, 48000) if option == "--noise-sample" else \
        denoiser.noise_floor(audio[:, : 44100 * 2], 44100)
    written, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    np.testing.assert_allclose(written.T, denoiser.denoise(audio, 44100, noise_floor=floor), rtol=0, atol=1e-6)
    assert np.abs(written.T - denoiser.denoise(audio, 44100)).max() > 1e-3  # not the automatic estimate
