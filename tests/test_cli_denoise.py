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
    # As bytes, so that a name that is not valid UTF-8 can be written too.
    sf.write(os.fsencode(path), audio.T, sample_rate, subtype=subtype, format=fmt or path.suffix[1:].upper())
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


def test_option_errors_exit_2_before_any_file_or_folder_is_touched(tmp_path, tiny_checkpoint, capsys):
    write(tmp_path / "in" / "a.wav")
    folder = tmp_path / "existing"
    folder.mkdir()
    cases = [
        ("--strength-db", "200", "--out-dir", tmp_path / "out"),
        ("--subtype", "BOGUS", "--out-dir", tmp_path / "out"),
        ("--out-dir", tmp_path / "out", "--model", tmp_path / "README.md"),
        ("-o", folder),
        ("-o", tmp_path / "a.xyz"),
        ("-o", tmp_path / "a.flac", "--subtype", "FLOAT"),
    ]
    (tmp_path / "README.md").write_text("# not a model")
    for options in cases:
        code = run(tiny_checkpoint, tmp_path / "in" / "a.wav", *options)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (options, err)
        assert not (tmp_path / "out").exists() and list(folder.iterdir()) == [], options
    assert run(tiny_checkpoint, tmp_path / "in", "-o", tmp_path / "x.wav") == 2  # a folder needs --out-dir
    assert "use --out-dir" in capsys.readouterr().err
    assert run(tiny_checkpoint, "", "--out-dir", tmp_path / "out") == 2
    assert "empty string" in capsys.readouterr().err


def test_a_model_that_is_not_one_is_named_truly(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# not a model")
    assert main(["denoise", "--model", str(readme), str(write(tmp_path / "a.wav")), "-o", str(tmp_path / "b.wav")]) == 2
    err = capsys.readouterr().err
    assert "README.md: not a model file" in err and "README.safetensors" not in err


def test_an_out_dir_inside_the_input_is_not_read_back(tmp_path, tiny_checkpoint):
    write(tmp_path / "nest" / "a.wav")
    for _ in range(2):
        assert run(tiny_checkpoint, tmp_path / "nest", "--out-dir", tmp_path / "nest" / "clean") == 0
    found = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "nest").rglob("*.wav"))
    assert found == ["nest/a.wav", "nest/clean/nest/a.wav"]


def test_two_inputs_for_one_output_are_refused_up_front(tmp_path, tiny_checkpoint, capsys):
    write(tmp_path / "d1" / "x.wav")
    write(tmp_path / "d2" / "x.wav")
    assert run(tiny_checkpoint, tmp_path / "d1" / "x.wav", tmp_path / "d2" / "x.wav", "--out-dir", tmp_path / "out") == 2
    assert "d1/x.wav and" in capsys.readouterr().err and not (tmp_path / "out").exists()
    write(tmp_path / "a" / "music" / "y.wav")
    write(tmp_path / "b" / "music" / "y.wav")
    assert run(tiny_checkpoint, tmp_path / "a" / "music", tmp_path / "b" / "music", "--out-dir", tmp_path / "out") == 2
    # The same file given twice is one job, not a clash.
    assert run(tiny_checkpoint, tmp_path / "d1" / "x.wav", tmp_path / "d1", "--out-dir", tmp_path / "out") == 0


def test_odd_names_and_non_regular_files_are_reported_and_the_batch_goes_on(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    write(folder / "good.wav")
    write(Path(os.fsdecode(bytes(folder) + b"/bad\xffname.wav")))
    (folder / "evil\n\x1b[31mred.wav").write_bytes(b"not audio")
    os.mkfifo(folder / "pipe.wav")
    (folder / "dangling.wav").symlink_to(folder / "nowhere.wav")
    assert run(tiny_checkpoint, folder, "--out-dir", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "evil\\n\\x1b[31mred.wav" in err
    assert "bad\\xffname.wav" not in err  # it was denoised, not reported
    assert "pipe.wav: not a regular file" in err and "dangling.wav: broken or looping link" in err
    assert sum("error" in line for line in err.splitlines()) == 3
    outputs = {os.fsencode(p.name) for p in (tmp_path / "out" / "in").iterdir()}
    assert outputs == {b"good.wav", b"bad\xffname.wav"}
    os.mkfifo(tmp_path / "direct.wav")  # given by name it is skipped too, instead of blocking on it
    assert run(tiny_checkpoint, tmp_path / "direct.wav", "-o", tmp_path / "o.wav") == 1
    assert "direct.wav: not a regular file" in capsys.readouterr().err


def test_a_long_name_gets_a_temporary_file_that_fits(tmp_path, tiny_checkpoint):
    source = write(tmp_path / ("L" * 250 + ".wav"))
    assert run(tiny_checkpoint, source, "--out-dir", tmp_path / "out") == 0
    assert (tmp_path / "out" / source.name).is_file()


def test_temporary_files_of_live_processes_are_kept_and_dead_ones_removed(tmp_path):
    from cassette_denoise.audio import partial_prefix, remove_stale_partials

    target = tmp_path / "a.wav"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live, gone = partial_prefix(target, pid=os.getppid()), partial_prefix(target, pid=int(dead.stdout))
    for name in (f"{live}abcd1234.partial", f"{gone}abcd1234.partial", ".a.wav.x.123.abcd1234.partial"):
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_partials(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{live}abcd1234.partial", ".a.wav.x.123.abcd1234.partial"])


@pytest.mark.parametrize("fmt,suffix", [("AU", ".au"), ("W64", ".w64"), ("WAV", ".wav"), ("AIFF", ".aiff")])
def test_truncated_files_of_every_format_are_reported(tmp_path, tiny_checkpoint, capsys, fmt, suffix):
    source = write(tmp_path / f"x{suffix}", 2.0, fmt=fmt)
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert run(tiny_checkpoint, source, "-o", tmp_path / f"out{suffix}") == 1
    assert "truncated" in capsys.readouterr().err and not (tmp_path / f"out{suffix}").exists()


def test_bytes_without_a_header_named_au_are_refused(tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "noise.au"
    source.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    assert run(tiny_checkpoint, source, "-o", tmp_path / "out.au") == 1
    assert "noise.au: not a readable audio file (no header)" in capsys.readouterr().err
    assert not (tmp_path / "out.au").exists()


def test_output_subtype_follows_the_input_across_formats(tmp_path, tiny_checkpoint):
    source = write(tmp_path / "a.flac", subtype="PCM_24")
    assert run(tiny_checkpoint, source, "-o", tmp_path / "a.wav") == 0
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_24"


def test_huge_samples_are_refused_and_nothing_is_written(tmp_path, tiny_checkpoint, capsys):
    audio = np.zeros((22050, 1), np.float32)
    audio[100] = 1e37
    sf.write(tmp_path / "huge.wav", audio, 44100, subtype="FLOAT")
    for suffix in (".wav", ".flac"):
        assert run(tiny_checkpoint, tmp_path / "huge.wav", "-o", tmp_path / f"out{suffix}") == 1
        assert "huge.wav: a sample of 1e+37" in capsys.readouterr().err
        assert not (tmp_path / f"out{suffix}").exists()


def test_clipping_is_reported_once(tmp_path, tiny_checkpoint, capfd):
    audio = music_like(1, 44100, 44100) * 40
    sf.write(tmp_path / "loud.wav", audio.T, 44100, subtype="FLOAT")
    assert run(tiny_checkpoint, tmp_path / "loud.wav", "-o", tmp_path / "out.wav", "--subtype", "PCM_16") == 0
    assert capfd.readouterr().err.count("clipped") == 1


def test_a_full_disk_names_the_file_and_the_batch_goes_on(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import cassette_denoise.audio as audio_module

    for name in ("a.wav", "b.wav"):
        write(tmp_path / "in" / name)
    real_write = audio_module.sf.SoundFile.write

    def full_for_a(self, data):
        if "a.wav" in os.fsdecode(self.name):
            raise sf.LibsndfileError(2, prefix="")  # what libsndfile gives for ENOSPC / EFBIG: "System error."
        return real_write(self, data)

    monkeypatch.setattr(audio_module.sf.SoundFile, "write", full_for_a)
    assert run(tiny_checkpoint, tmp_path / "in", "--out-dir", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "a.wav: cannot write" in err
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == ["b.wav"]  # no temporary file left


def test_a_damaged_mp3_is_one_error_naming_it(tmp_path, tiny_checkpoint, capfd):
    source = write(tmp_path / "a.mp3", 3.0, subtype="MPEG_LAYER_III")
    data = bytearray(source.read_bytes())
    for position in np.random.default_rng(1).integers(200, len(data), 300):
        data[position] ^= 0xFF
    source.write_bytes(bytes(data))
    assert run(tiny_checkpoint, source, "-o", tmp_path / "out.wav") == 1
    err = capfd.readouterr().err
    assert "a.mp3: corrupt MP3 data" in err and "libmpg123" not in err
    assert not (tmp_path / "out.wav").exists()
