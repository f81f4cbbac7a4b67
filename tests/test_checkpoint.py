"""Model files that must be refused, each with one line that names the file, before any big allocation."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from cassette_denoise.checkpoint import CheckpointError, load_model, save_model, sidecar_path


@pytest.fixture
def saved(tmp_path, random_model):
    path = save_model(tmp_path / "m.safetensors", random_model)
    return path, load_file(str(path)), json.loads(sidecar_path(path).read_text())


def _rewrite(path, tensors=None, sidecar=None, raw_sidecar=None):
    if tensors is not None:
        save_file(tensors, str(path))
    if sidecar is not None or raw_sidecar is not None:
        sidecar_path(path).write_text(raw_sidecar if raw_sidecar is not None else json.dumps(sidecar))


def _first(tensors):
    return next(name for name in tensors if name.endswith("weight"))


@pytest.mark.parametrize("case,change,words", [
    ("NaN weights", lambda t, s: ({**t, _first(t): t[_first(t)] * float("nan")}, None), "non-finite weights"),
    ("Inf weights", lambda t, s: ({**t, _first(t): t[_first(t)] + float("inf")}, None), "non-finite weights"),
    ("int8 weights", lambda t, s: ({n: v.to(torch.int8) for n, v in t.items()}, None), "floating point.*I8"),
    ("extra tensor", lambda t, s: ({**t, "extra": torch.zeros(1)}, None), "unexpected \\['extra'\\]"),
    ("wrong shape", lambda t, s: ({**t, _first(t): torch.zeros(1)}, None), "shapes"),
    ("list sidecar", lambda t, s: (None, "[1, 2]"), "must be a JSON object, got list"),
    ("null sidecar", lambda t, s: (None, "null"), "must be a JSON object, got NoneType"),
    ("not JSON", lambda t, s: (None, "{"), "not a readable JSON sidecar"),
    ("config a list", lambda t, s: (None, json.dumps({**s, "config": [1]})), "bad model config"),
    ("unknown config key", lambda t, s: (None, json.dumps({**s, "config": {**s["config"], "x": 1}})), "bad model config"),
    ("levels a string", lambda t, s: (None, json.dumps({**s, "config": {**s["config"], "levels": "5"}})), "levels = '5'"),
    ("levels 14", lambda t, s: (None, json.dumps({**s, "config": {**s["config"], "levels": 14}})), "levels = 14"),
    ("width 100000", lambda t, s: (None, json.dumps({**s, "config": {**s["config"], "base_width": 100_000}})),
     "parameters, more than"),
    ("dropout 2", lambda t, s: (None, json.dumps({**s, "config": {**s["config"], "dropout": 2.0}})), "bad model config"),
    ("calibration NaN", lambda t, s: (None, json.dumps({**s, "calibration": {"mask_exponent": float("nan")}})),
     "bad calibration"),
    ("calibration 100", lambda t, s: (None, json.dumps({**s, "calibration": {"mask_exponent": 100}})), "bad calibration"),
])
def test_bad_model_files_are_refused_naming_the_file(saved, case, change, words):
    path, tensors, sidecar = saved
    new_tensors, raw = change(tensors, sidecar)
    _rewrite(path, tensors=new_tensors, raw_sidecar=raw)
    with pytest.raises(CheckpointError, match=words) as caught:
        load_model(path)
    message = str(caught.value)
    assert "m.safetensors" in message or "m.json" in message, message
    assert "\n" not in message


def test_a_path_that_is_not_a_model_file_says_so(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not a model")
    with pytest.raises(CheckpointError, match=r"README.md: not a model file"):
        load_model(readme)
    with pytest.raises(CheckpointError, match=r"nothing.md: no such model file"):
        load_model(tmp_path / "nothing.md")


def test_a_huge_config_is_refused_before_it_allocates(saved):
    """Under a 1.5 GB address-space cap: building the model a `levels: 10` config asks for would need ~10 GB."""
    path, _, sidecar = saved
    _rewrite(path, raw_sidecar=json.dumps({**sidecar, "config": {**sidecar["config"], "base_width": 64, "levels": 10}}))
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))
from cassette_denoise.checkpoint import CheckpointError, load_model
try:
    load_model({str(path)!r})
except CheckpointError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "parameters, more than" in result.stdout, result.stdout + result.stderr
