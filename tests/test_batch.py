"""The batch command on a real Dask LocalCluster (2 worker processes): outputs, manifest, report, resumption,
a worker killed mid-run, Ctrl-C, a corrupt file."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from distributed import Client, LocalCluster

from cassette_denoise.batch.manifest import MANIFEST_NAME, Entry, Manifest
from cassette_denoise.batch.report import listen_order, warnings_for, write_report
from cassette_denoise.batch.run import _CtrlC
from cassette_denoise.batch.stats import measure
from cassette_denoise.cli import main

from conftest import music_like

TAPES = 20
CONSOLE_SCRIPT = Path(sys.executable).with_name("cassette-denoise")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def make_tapes(folder: Path, count: int = TAPES, *, corrupt: str | None = None) -> list[Path]:
    """``count`` short tapes of 0.5-1 s (WAV and FLAC, mono and stereo, some in a subfolder)."""
    rng = np.random.default_rng(25)
    paths = []
    for index in range(count):
        if corrupt is not None and index == count - 1:
            path = folder / corrupt
            path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
        else:
            path = folder / ("side-b" if index % 3 == 0 else "") / f"tape{index:02d}.{'flac' if index % 2 else 'wav'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            channels, samples = 1 + index % 2, int(rng.uniform(0.5, 1.0) * 44100)
            sf.write(path, music_like(channels, samples, 44100, seed=index).T, 44100, subtype="PCM_16")
        paths.append(path)
    return paths


def batch(client, tiny_checkpoint, source: Path, out: Path, *options) -> int:
    return main(["batch", str(source), "--out-dir", str(out), "--scheduler", client.scheduler.address,
                 "--model", str(tiny_checkpoint), "--device", "cpu", *map(str, options)])


def manifest_rows(out: Path) -> dict[str, dict]:
    with sqlite3.connect(f"file:{out / MANIFEST_NAME}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return {Path(row["input_path"]).name: dict(row) for row in db.execute("SELECT * FROM files")}


def done_count(out: Path) -> int:
    """Rows done so far in a manifest another process is writing (0 before it has its table)."""
    try:
        return sum(row["status"] == "done" for row in manifest_rows(out).values())
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def output_of(source: Path, tapes: Path, out: Path) -> Path:
    return out / tapes.name / source.relative_to(tapes)


def stamps(out: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in out.rglob("tape*.*")}


def assert_valid_outputs(tapes: list[Path], root: Path, out: Path) -> None:
    for source in tapes:
        made, given = sf.info(output_of(source, root, out)), sf.info(source)
        assert (made.frames, made.samplerate, made.channels, made.subtype) == \
            (given.frames, given.samplerate, given.channels, given.subtype)
        assert np.isfinite(sf.read(output_of(source, root, out))[0]).all()


def test_batch_denoises_every_tape_records_the_corrupt_one_and_reports(tmp_path, client, tiny_checkpoint, capsys):
    root = tmp_path / "tapes"
    tapes = make_tapes(root, corrupt="broken.wav")
    good, digests = tapes[:-1], {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in tapes}
    out = tmp_path / "out"
    assert batch(client, tiny_checkpoint, root, out) == 1
    assert "broken.wav" in capsys.readouterr().err
    assert_valid_outputs(good, root, out)
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in tapes} == digests  # inputs untouched
    rows = manifest_rows(out)
    assert rows["broken.wav"]["status"] == "failed" and "broken.wav" in rows["broken.wav"]["error"]
    for source in good:
        row = rows[source.name]
        assert row["status"] == "done" and row["error"] is None
        assert row["content_sha256"] == digests[source]
        assert row["duration_s"] == pytest.approx(sf.info(source).duration)
        assert row["size_bytes"] == source.stat().st_size and row["mtime_ns"] == source.stat().st_mtime_ns
        assert row["output_path"] == str(output_of(source, root, out).resolve())
        assert Path(row["thumbnail"]).is_file()
    with open(out / "report" / "report.csv", newline="") as handle:
        report = list(csv.DictReader(handle))
    assert len(report) == TAPES and report[0]["status"] == "failed"  # what needs attention comes first
    assert (out / "report" / "index.html").read_text().count("<img ") == len(good)

    before = stamps(out)
    assert batch(client, tiny_checkpoint, root, out) == 1  # the broken file is tried again, and fails again
    assert stamps(out) == before  # nothing done is redone


def test_noise_from_takes_each_tapes_floor_from_its_own_passage_and_a_short_tape_fails_alone(tmp_path, client):
    import torch

    from cassette_denoise.checkpoint import save_model
    from cassette_denoise.denoiser import Denoiser
    from cassette_denoise.front import passage_noise_floor
    from cassette_denoise.model import UNet, UNetConfig

    torch.manual_seed(4)
    checkpoint = save_model(tmp_path / "floor.safetensors", UNet(UNetConfig(base_width=2, noise_floor_input=True)))
    root, rng = tmp_path / "tapes", np.random.default_rng(5)
    root.mkdir()
    for index, level in enumerate((0.002, 0.02)):  # each tape's lead-in: hiss alone, at its own level
        hiss = rng.standard_normal((2, 3 * 44100)) * level
        hiss[:, 44100:] += music_like(2, 2 * 44100, 44100, seed=index)
        sf.write(root / f"tape{index}.wav", hiss.T.astype(np.float32), 44100, subtype="FLOAT")
    sf.write(root / "short.wav", music_like(2, 22050, 44100).T, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    # float32: a tiny random model's response to its floor input is below bfloat16's resolution.
    assert batch(client, checkpoint, root, out, "--noise-from", "0-1", "--precision", "float32") == 1
    rows = manifest_rows(out)
    assert rows["short.wav"]["status"] == "failed" and "ends after the file" in rows["short.wav"]["error"]
    denoiser = Denoiser.from_checkpoint(checkpoint, device="cpu", precision="float32")
    for index in range(2):
        source = root / f"tape{index}.wav"
        floor = passage_noise_floor(source, start_s=0, end_s=1, remove_hum=True)
        expected = denoiser.denoise_file(source, tmp_path / "expected.wav", noise_floor=floor)
        assert rows[source.name]["status"] == "done"
        np.testing.assert_array_equal(sf.read(output_of(source, root, out))[0], sf.read(tmp_path / "expected.wav")[0])
        plain = denoiser.denoise(sf.read(source, dtype="float32")[0].T, 44100)  # the floor from the music
        assert not np.array_equal(sf.read(output_of(source, root, out), dtype="float32")[0].T, plain)
    assert expected.duration_s == pytest.approx(3.0)
    # Other settings: every tape is done again, the short one too.
    assert batch(client, checkpoint, root, out, "--precision", "float32") == 0
    assert manifest_rows(out)["short.wav"]["status"] == "done"


def test_changed_input_or_settings_are_redone_and_a_touched_input_is_not(tmp_path, client, tiny_checkpoint):
    root = tmp_path / "tapes"
    tapes = make_tapes(root, 4)
    out = tmp_path / "out"
    assert batch(client, tiny_checkpoint, root, out) == 0
    first = stamps(out)
    os.utime(tapes[0], ns=(time.time_ns(), time.time_ns()))  # same content, new mtime
    sf.write(tapes[1], music_like(2, 30000, 44100, seed=99).T, 44100, subtype="PCM_16")  # new content
    assert batch(client, tiny_checkpoint, root, out) == 0
    second = stamps(out)
    assert [name for name in first if second[name] != first[name]] == [tapes[1].name]
    assert sf.info(output_of(tapes[1], root, out)).frames == 30000
    assert batch(client, tiny_checkpoint, root, out, "--strength-db", 12) == 0
    assert all(stamp != second[name] for name, stamp in stamps(out).items())
    assert {row["status"] for row in manifest_rows(out).values()} == {"done"}


def test_a_worker_killed_mid_run_does_not_stop_the_run(tmp_path, client, tiny_checkpoint):
    root = tmp_path / "tapes"
    tapes = make_tapes(root)
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("code", batch(client, tiny_checkpoint, root, out)))
    runner.start()
    deadline = time.monotonic() + 60
    while not any(client.processing().values()):
        assert time.monotonic() < deadline and runner.is_alive(), "the batch never sent work to the workers"
        time.sleep(0.01)
    busy = next(address for address, keys in client.processing().items() if keys)
    pid = client.run(os.getpid, workers=[busy])[busy]
    os.kill(pid, signal.SIGKILL)
    assert runner.is_alive()  # killed mid-run
    runner.join(timeout=120)
    assert result["code"] == 0
    assert {row["status"] for row in manifest_rows(out).values()} == {"done"}
    assert len(manifest_rows(out)) == TAPES
    assert_valid_outputs(tapes, root, out)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker for the next tests


def test_a_first_ctrl_c_waits_for_a_safe_point_and_a_second_stops_at_once():
    previous = signal.getsignal(signal.SIGINT)
    with _CtrlC() as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)  # lands in the middle of "a call to the cluster": only noted
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt), ctrl_c.may_stop_here():
            pytest.fail("the noted Ctrl-C should stop the run before this")
    with _CtrlC() as ctrl_c:
        with pytest.raises(KeyboardInterrupt), ctrl_c.may_stop_here():
            os.kill(os.getpid(), signal.SIGINT)  # while waiting for a file: stops there
            time.sleep(5)
    with _CtrlC():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is previous


def test_ctrl_c_stops_cleanly_and_a_rerun_does_only_the_rest(tmp_path, client, tiny_checkpoint):
    root = tmp_path / "tapes"
    tapes = make_tapes(root)
    out = tmp_path / "out"
    command = [str(CONSOLE_SCRIPT), "batch", str(root), "--out-dir", str(out), "--workers", "2",
               "--model", str(tiny_checkpoint), "--device", "cpu"]
    # A process group of its own, so that Ctrl-C can reach all of it as a terminal sends it.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 90
    while done_count(out) < 2:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "interrupted" in errors and "Traceback" not in errors  # the workers leave the stopping to the batch
    rows = manifest_rows(out)
    assert "running" not in {row["status"] for row in rows.values()}
    done = {name for name, row in rows.items() if row["status"] == "done"}
    assert 2 <= len(done) < TAPES
    for name in done:  # a file marked done is whole
        source = next(path for path in tapes if path.name == name)
        assert sf.info(output_of(source, root, out)).frames == sf.info(source).frames
    before = stamps(out)

    assert batch(client, tiny_checkpoint, root, out) == 0
    after = stamps(out)
    assert {name for name in done if after[name] == before[name]} == done  # finished tapes were not redone
    assert {row["status"] for row in manifest_rows(out).values()} == {"done"}
    assert_valid_outputs(tapes, root, out)
    assert not list(out.rglob("*.partial"))  # what the interrupted run left half-written was cleared


def test_measure_finds_the_hiss_floor_the_denoiser_lowers(tmp_path):
    rng = np.random.default_rng(0)
    quiet, loud = (tmp_path / f"{name}.wav" for name in ("quiet", "loud"))
    music = music_like(1, 88200, 44100)
    sf.write(quiet, (music + 1e-4 * rng.standard_normal(music.shape)).T, 44100, subtype="FLOAT")
    sf.write(loud, (music + 1e-2 * rng.standard_normal(music.shape)).T, 44100, subtype="FLOAT")
    floors = {path.stem: measure(path).floors_db for path in (quiet, loud)}
    # White noise 40 dB louder raises every band's floor by close to 40 dB where the music leaves gaps.
    assert floors["loud"]["hiss"] - floors["quiet"]["hiss"] == pytest.approx(40, abs=1.5)


def test_report_warnings_and_the_listen_order():
    floors = {"rumble": -60.0, "mid": -70.0}
    quiet = warnings_for(clipped_samples=0, hum_hz=None, floors_before_db={**floors, "hiss": -85.0},
                         floors_after_db={**floors, "hiss": -101.0})
    assert quiet == []  # the real excerpt's floors: nothing to flag
    loud = warnings_for(clipped_samples=12, hum_hz=50.0, floors_before_db={**floors, "hiss": -70.0},
                        floors_after_db={**floors, "hiss": -71.0}, whine_hz=(3150.4, 1227.4))
    assert len(loud) == 5 and "12 samples clipped" in loud and "50 Hz hum removed" in loud
    assert "whine removed at 1227, 3150 Hz" in loud
    rows = [{"status": "done", "warnings": json.dumps(quiet), "hiss_floor_after_db": -101.0, "input_path": "a"},
            {"status": "done", "warnings": json.dumps(loud), "hiss_floor_after_db": -71.0, "input_path": "b"},
            {"status": "failed", "warnings": "[]", "hiss_floor_after_db": None, "input_path": "c"}]
    assert [row["input_path"] for row in sorted(rows, key=listen_order)] == ["c", "b", "a"]


def test_a_manifest_of_the_first_schema_keeps_its_rows_and_gains_the_whine_column(tmp_path):
    with Manifest(tmp_path) as manifest:
        manifest.queue(Entry("/tapes/a.wav", "/out/a.flac", 10, 1, "s", "m", "{}"))
        manifest.finish("/tapes/a.wav", status="done", warnings=[], hum_hz=50.0)
    with sqlite3.connect(tmp_path / MANIFEST_NAME) as db:  # as the first schema wrote it
        db.execute("ALTER TABLE files DROP COLUMN whine_hz")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    with Manifest(tmp_path) as manifest:
        (row,) = manifest.rows()
        assert (row["status"], row["hum_hz"], row["whine_hz"]) == ("done", 50.0, None)
        manifest.queue(Entry("/tapes/b.wav", "/out/b.flac", 10, 1, "s", "m", "{}"))
        manifest.finish("/tapes/b.wav", status="done", warnings=[], whine_hz="1227 3150")
        csv_path, html_path = write_report(manifest.rows(), tmp_path)
    report = {row["input_path"]: row for row in csv.DictReader(csv_path.open())}
    assert report["/tapes/b.wav"]["whine_hz"] == "1227 3150" and report["/tapes/a.wav"]["whine_hz"] == ""
    assert "1227 3150 Hz" in html_path.read_text()
