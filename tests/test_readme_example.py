"""The README's first command, run as a new user would: through the installed console script."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def readme_denoise_command() -> list[str]:
    """The ``cassette-denoise denoise ...`` step of the README's first ```bash block, as argv."""
    block = re.search(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert block, "README.md has no ```bash block"
    steps = [shlex.split(step) for step in block.group(1).replace("\\\n", " ").split("&&")]
    commands = [step for step in steps if step[:2] == ["cassette-denoise", "denoise"]]
    assert len(commands) == 1, f"want one cassette-denoise denoise step in README's first bash block, got {steps}"
    return commands[0]


def high_band_db(audio: np.ndarray, sample_rate: int, *, from_hz: float = 8000.0) -> float:
    spectrum = np.abs(np.fft.rfft(audio, axis=0)) ** 2
    band = np.fft.rfftfreq(audio.shape[0], 1 / sample_rate) >= from_hz
    return 10 * np.log10(spectrum[band].sum())


def test_readme_first_command_denoises_the_example_through_the_console_script(tmp_path):
    argv = readme_denoise_command()
    script = Path(sys.executable).parent / "cassette-denoise"
    assert script.is_file(), f"the console script is not installed next to {sys.executable}"
    output_arg = argv[argv.index("-o") + 1]
    # Copy the inputs the command names, so the run writes only into tmp_path; not an output the README's own
    # command left in the checkout, which would make the run skip the file.
    for arg in argv:
        if arg != output_arg and (REPO / arg).is_file():
            (tmp_path / arg).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / arg, tmp_path / arg)
    result = subprocess.run([str(script), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    source, output = tmp_path / argv[2], tmp_path / output_arg
    before, after = sf.info(source), sf.info(output)
    assert (after.frames, after.samplerate, after.channels, after.format, after.subtype) == \
        (before.frames, before.samplerate, before.channels, before.format, before.subtype)
    noisy, rate = sf.read(source, dtype="float32")
    clean, _ = sf.read(output, dtype="float32")
    assert np.isfinite(clean).all()
    # The example is hiss over music: the treble band, where hiss lives, loses most of it.
    assert high_band_db(clean, rate) < high_band_db(noisy, rate) - 6
    assert "denoised 1 file(s)" in result.stderr
