"""The model's arithmetic: bfloat16 where the CPU has it, float32 otherwise, the mask always in float32."""

import numpy as np
import pytest
import soundfile as sf
import torch

from cassette_denoise.cli import main
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNet, UNetConfig
from cassette_denoise.precision import native_bfloat16, resolve_precision

from conftest import music_like


def test_precisions_resolve_to_their_dtypes_and_auto_follows_the_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native_bfloat16(cpu) else torch.float32)
    assert resolve_precision("auto", gpu) == torch.float32 and not native_bfloat16(gpu)


@pytest.mark.parametrize("bad", ["half", "fp16", "", "BFLOAT16"])
def test_an_unknown_precision_is_refused_with_its_value(random_model, bad):
    with pytest.raises(ValueError, match=repr(bad)):
        Denoiser(random_model, device="cpu", precision=bad)


def test_bfloat16_output_stays_within_minus_40_db_of_float32(random_model):
    audio = music_like(2, 44100 * 3, 44100, seed=4)
    exact = Denoiser(random_model, device="cpu", precision="float32").denoise(audio, 44100)
    reduced = Denoiser(random_model, device="cpu", precision="bfloat16").denoise(audio, 44100)
    assert not np.array_equal(exact, reduced)  # the arithmetic did change
    error_db = 10 * np.log10(np.sum((reduced - exact) ** 2) / np.sum(exact**2))
    assert error_db < -40


def test_the_mask_itself_is_computed_in_float32():
    # A constant logit of 5: sigmoid(5) = 0.993307 in float32, but 0.9922 or 0.9961 if rounded to bfloat16.
    model = UNet(UNetConfig(base_width=2)).eval()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.constant_(model.head.bias, 5.0)
    audio = music_like(1, 44100 * 2, 44100, seed=5)
    out = Denoiser(model, device="cpu", precision="bfloat16", remove_hum=False).denoise(audio, 44100)
    np.testing.assert_allclose(out, audio * torch.sigmoid(torch.tensor(5.0)).item(), atol=2e-6)


def test_the_command_takes_precision_and_refuses_an_unknown_one(tmp_path, tiny_checkpoint, random_model, capsys):
    audio = music_like(2, 44100 * 2, 44100, seed=6)
    sf.write(tmp_path / "in.wav", audio.T, 44100, subtype="FLOAT")
    assert main(["denoise", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out.wav"), "--model", str(tiny_checkpoint),
                 "--device", "cpu", "--precision", "float32"]) == 0
    expected = Denoiser(random_model, device="cpu", precision="float32").denoise(audio, 44100)
    np.testing.assert_array_equal(sf.read(tmp_path / "out.wav", dtype="float32")[0].T, expected)
    with pytest.raises(SystemExit) as exit_info:
        main(["denoise", str(tmp_path / "in.wav"), "-o", str(tmp_path / "x.wav"), "--precision", "half"])
    assert exit_info.value.code == 2 and "half" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
