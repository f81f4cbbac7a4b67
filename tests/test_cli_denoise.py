"""The denoise command end to end on small files: outputs, errors, exit codes, untouched inputs."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cassette_denoise.cli import main

from conftest import music_like


def write(path: Path, seconds: float = 1.0, *, sample_rate: int = 44100, channels: int = 2, subtype="PCM_16", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = music_like(channels, int(seconds * sample_rate), sample_rate)
    sf.write(path, audio.T, sample_rate, subtype=subtype, format=fmt)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(tiny_checkpoint, *args) -> int:
    return main(["denoise", "--model", str(tiny_checkpoint), "--device", "cpu", *map(str, args)])


@pytest.mark.parametrize("name,rate,channels,subtype", [
    ("a.wav", 44100, 2, "PCM_16"), ("b.flac", 48000, 1, "PCM_24"), ("c.wav", 22050, 6, "FLOAT"),
    ("d.ogg", 32000, 2, "VORBIS"), ("e.mp3", 44100, 2, "MPEG_LAYER_III"),
])
def test_output_keeps_rate_channels_format_subtype_and_input_bytes(tmp_path, tiny_checkpoint, name, rate, channels, subtype):
    source = write(tmp_path / name, sample_rate=rate, channels=channels, subtype=subtype)
    before = digest(source)
    assert run(tiny_checkpoint, source, "-o", tmp_path / "out" / name) == 0  # creates the missing folder
    info_in, info_out = sf.info(source), sf.info(tmp_path / "out" / name)
    assert (info_out.samplerate, info_out.channels, info_out.format, info_out.subtype) == \
        (info_in.samplerate, info_in.channels, info_in.format, info_in.subtype)
    if subtype not in ("VORBIS", "MPEG_LAYER_III"):  # lossy codecs pad frames
        assert info_out.frames == info_in.frames
    assert digest(source) == before


def test_batch_mirrors_folders_skips_existing_and_reports_bad_files(tmp_path, tiny_checkpoint, capsys):
    write(tmp_path / "in" / "one.wav")
    write(tmp_path / "in" / "deep" / "two.flac", channels=1)
    (tmp_path / "in" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    before = {p: digest(p) for p in (tmp_path / "in").rglob("*") if p.is_file()}
    assert run(tiny_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "corrupt.wav" in errors[0]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        ["in/deep/two.flac", "in/one.wav"]
    assert before == {p: digest(p) for p in before}
    stamp = (tmp_path / "out" / "in" / "one.wav").stat().st_mtime_ns
    run(tiny_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out")
    assert (tmp_path / "out" / "in" / "one.wav").stat().st_mtime_ns == stamp  # skipped
    run(tiny_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out", "--overwrite")
    assert (tmp_path / "out" / "in" / "one.wav").stat().st_mtime_ns != stamp


def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    (empty_folder / "notes.txt").write_text("no audio here")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros((0, 2)), 44100)
    truncated = write(tmp_path / "truncated.flac", 3.0)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    cut_wav = write(tmp_path / "cut.wav", 3.0)
    cut_wav.write_bytes(cut_wav.read_bytes()[:100_000])  # a WAV whose data chunk was cut off
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full((1000, 1), np.nan, dtype=np.float32), 44100, subtype="FLOAT")
    unsupported = tmp_path / "text.wav"
    unsupported.write_text("just text")
    low_rate = write(tmp_path / "low.wav", sample_rate=4000, channels=1)
    empty_file = tmp_path / "empty.flac"
    empty_file.write_bytes(b"")
    return {"missing": tmp_path / "missing.wav", "folder without audio": empty_folder, "zero frames": zero,
            "truncated": truncated, "truncated WAV": cut_wav, "NaN": nan, "unsupported": unsupported, "4 kHz": low_rate, "empty file": empty_file}


def test_each_bad_input_gives_one_line_and_exit_1(tmp_path, tiny_checkpoint, capsys):
    for case, path in bad_inputs(tmp_path).items():
        code = run(tiny_checkpoint, path, "--out-dir", tmp_path / "out")
        err = capsys.readouterr().err
        error_lines = [line for line in err.splitlines() if "error" in line]
        assert code == 1, case
        assert len(error_lines) == 1 and path.name in error_lines[0], (case, err)
        assert "Traceback" not in err


def test_unwritable_output_and_output_equal_to_input_are_refused(tmp_path, tiny_checkpoint, capsys):
    source = write(tmp_path / "a.wav")
    before = digest(source)
    assert run(tiny_checkpoint, source, "-o", source, "--overwrite") == 1
    assert "overwrite the input" in capsys.readouterr().err
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file where the output folder should be")
    assert run(tiny_checkpoint, source, "-o", not_a_folder / "a.wav") == 1
    assert "file" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere; the case above covers it
            assert run(tiny_checkpoint, source, "-o", locked / "a.wav") == 1
    finally:
        locked.chmod(0o700)
    assert digest(source) == before


def test_bad_model_file_is_one_line(tmp_path, capsys):
    source = write(tmp_path / "a.wav")
    assert main(["denoise", "--model", str(tmp_path / "nope.safetensors"), str(source), "-o", str(tmp_path / "b.wav")]) == 2
    assert "nope.safetensors: model weights not found" in capsys.readouterr().err
    assert not (tmp_path / "b.wav").exists()


def test_python_m_entry_point_runs_on_a_one_second_file(tmp_path, tiny_checkpoint):
    source = write(tmp_path / "a.wav")
    result = subprocess.run([sys.executable, "-m", "cassette_denoise", "denoise", str(source), "-o", str(tmp_path / "b.wav"),
                             "--model", str(tiny_checkpoint)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "denoised 1 file(s)" in result.stderr
    assert sf.info(tmp_path / "b.wav").frames == 44100


def test_kill_during_a_batch_leaves_no_partial_output_and_rerun_finishes(tmp_path, tiny_checkpoint):
    for index in range(4):
        write(tmp_path / "in" / f"{index}.wav", 20.0)
    command = [sys.executable, "-m", "cassette_denoise", "denoise", str(tmp_path / "in"), "--out-dir",
               str(tmp_path / "out"), "--model", str(tiny_checkpoint), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out" / "in"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*.wav")) and not list(out.glob(".*partial")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for path in out.glob("*.wav"):
        assert sf.info(path).frames == 20 * 44100  # any visible output is complete
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.wav", "1.wav", "2.wav", "3.wav"]  # no leftovers
