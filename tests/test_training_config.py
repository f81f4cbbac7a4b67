"""Run configs: nested tables, defaults that are the recipe's first stage, and the shipped recipe files."""

import dataclasses
import json
from pathlib import Path

import pytest

from cassette_denoise.checkpoint import load_model
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.model import UNetConfig
from cassette_denoise.training import PairConfig, TrainConfig
from cassette_denoise.training.config import from_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STAGES = sorted(CONFIGS.glob("stage*.toml"))


def test_model_and_pairs_are_toml_tables_and_lists_become_tuples(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('corpus_dir = "x"\nmax_steps = 5\n[model]\nbase_width = 4\n'
                    '[pairs]\npreset = ["training", "worn-tape"]\nnoise_snr_db = [5.0, 9.0]\n')
    config = TrainConfig.from_toml(path)
    assert config.model == dataclasses.replace(TrainConfig().model, base_width=4)
    assert config.pairs == PairConfig(preset=("training", "worn-tape"), noise_snr_db=(5.0, 9.0))
    assert config.max_steps == 5
    assert TrainConfig.from_toml(path, max_steps=9, device=None).max_steps == 9  # the command line wins


@pytest.mark.parametrize("text, named", [
    ('learning_rte = 1e-3\n', "learning_rte"),
    ('[model]\nbase_wdith = 4\n', "model.base_wdith"),
    ('[pairs]\nstereo_probability = 0.5\n', "pairs.stereo_probability"),
    ('[pairs]\nnoise_snr_probability = 1.5\n', "1.5"),
    ('crop_frames = 100\n', "100"),
    ('precision = "half"\n', "half"),
])
def test_a_bad_setting_is_refused_with_the_file_and_what_is_wrong(tmp_path, text, named):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"c\.toml: .*{named}"):
        TrainConfig.from_toml(path)


def test_the_defaults_are_the_first_stage_of_the_recipe():
    first = TrainConfig.from_toml(CONFIGS / "stage1-mix.toml")
    assert first == dataclasses.replace(TrainConfig(), corpus_dir=first.corpus_dir, run_dir=first.run_dir)


def test_the_recipe_has_seven_stages_each_starting_from_the_one_before():
    assert [path.name[:6] for path in STAGES] == [f"stage{n}" for n in range(1, 8)]
    configs = [TrainConfig.from_toml(path) for path in STAGES]
    assert not configs[0].init_from
    for before, after in zip(configs, configs[1:]):
        assert Path(after.init_from).parent.parent.as_posix() == before.run_dir
        step = int(Path(after.init_from).stem.removeprefix("step"))
        assert step == before.max_steps and step % before.validate_every_steps == 0  # a kept validation step


def test_the_last_stage_is_the_config_the_bundled_model_was_trained_with():
    sidecar = Denoiser.from_pretrained(device="cpu").metadata
    last = TrainConfig.from_toml(STAGES[-1])
    assert from_dict(sidecar["training"]["config"]) == last
    assert UNetConfig(**sidecar["config"]) == last.model


def test_the_loader_reads_a_sidecar_that_names_the_retired_coherence_input(tmp_path, tiny_checkpoint):
    import shutil

    from cassette_denoise.checkpoint import CheckpointError

    weights = shutil.copy(tiny_checkpoint, tmp_path / "m.safetensors")
    sidecar = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    for value, loads in ((False, True), (True, False)):
        sidecar["config"]["coherence_input"] = value
        (tmp_path / "m.json").write_text(json.dumps(sidecar))
        if loads:
            current = {key: value for key, value in sidecar["config"].items() if key != "coherence_input"}
            assert load_model(weights)[0].config == UNetConfig(**current)
        else:
            with pytest.raises(CheckpointError, match="coherence_input"):
                load_model(weights)


def test_the_smoke_config_is_small():
    smoke = TrainConfig.from_toml(CONFIGS / "smoke.toml")
    assert smoke.max_steps <= 10 and smoke.model.base_width <= 4 and smoke.device == "cpu"


def test_floor_from_noise_examples_must_fit_in_a_batch():
    with pytest.raises(ValueError, match=r"floor_from_noise_examples must be between 0 and batch_size \(8\), got 9"):
        TrainConfig(floor_from_noise_examples=9)
    assert TrainConfig(floor_from_noise_examples=8).floor_from_noise_examples == 8
