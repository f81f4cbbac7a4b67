"""The command line answers ``--help``, ``--version`` and argument errors without importing anything heavy,
and sets OpenMP's passive waiting before torch can load."""

import json
import subprocess
import sys

import pytest

from cassette_denoise import defaults
from cassette_denoise.cli import COMMAND_MODULES

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "soundfile", "soxr", "music21")
# A fresh interpreter: runs main(argv), then reports on stderr's last line what was imported.
PROBE = """
import json, os, sys
from cassette_denoise.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy, "wait_policy": os.environ.get("OMP_WAIT_POLICY")}}), file=sys.stderr)
""".format(heavy=set(HEAVY))
COMMANDS = [name.replace("_", "-") for name in COMMAND_MODULES]


def probe(*argv: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=60)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv,code", [
    (["--help"], 0), (["--version"], 0), ([], 2), (["no-such-command"], 2),
    *[([command, "--help"], 0) for command in COMMANDS],
    # every command but serve has a required argument; serve refuses a port that is not a number
    *[([command], 2) for command in COMMANDS if command != "serve"],
    (["serve", "--port", "eighty"], 2),
    (["denoise", "in.wav", "-o", "out.wav", "--threads", "0"], 2),
    (["simulate", "in.wav", "-o", "out.wav", "--preset", "no-such-preset"], 2),
])
def test_parsing_imports_nothing_heavy(argv, code):
    result = probe(*argv)
    assert result["code"] == code
    assert result["heavy"] == []


def test_main_sets_passive_waiting_unless_the_user_chose(tmp_path):
    import os

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    assert probe("--version", env=env)["wait_policy"] == "PASSIVE"
    assert probe("--version", env={**env, "OMP_WAIT_POLICY": "ACTIVE"})["wait_policy"] == "ACTIVE"


def test_the_light_preset_names_match_the_simulator():
    from cassette_denoise.simulate import PRESETS

    assert defaults.PRESET_NAMES == tuple(PRESETS)


def test_package_names_load_on_first_use():
    import cassette_denoise
    from cassette_denoise.audio import AudioError
    from cassette_denoise.denoiser import Denoiser

    assert cassette_denoise.AudioError is AudioError and cassette_denoise.Denoiser is Denoiser
    with pytest.raises(AttributeError, match="no_such_name"):
        cassette_denoise.no_such_name  # noqa: B018


def test_the_denoising_path_leaves_out_scipy_signal():
    # scipy.signal (and scipy.stats with it) takes about half a second to import: every `denoise` would pay it.
    code = ("import sys; from cassette_denoise.denoiser import Denoiser; Denoiser.from_pretrained(); "
            "print(sorted(m for m in sys.modules if m.startswith(('scipy.signal', 'scipy.stats'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
