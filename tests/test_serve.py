"""The server without a browser: re-rendering from the kept mask, the API's safety, the command itself."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import music_like
from serve_fixtures import free_port, running_app

pytest.importorskip("fastapi")

from cassette_denoise.denoiser import Denoiser  # noqa: E402
from cassette_denoise.model import UNet, UNetConfig  # noqa: E402
from cassette_denoise.serve import render, tracks  # noqa: E402
from cassette_denoise.serve.app import create_app, download_name  # noqa: E402

CONSOLE_SCRIPT = Path(sys.executable).with_name("cassette-denoise")


def analysed(tmp_path: Path, denoiser: Denoiser, audio: np.ndarray, sample_rate: int) -> tracks.Track:
    folder = tmp_path / "file"
    folder.mkdir()
    file = tracks.Track("id", "take.wav", folder, ".wav")
    sf.write(file.input_path, audio.T, sample_rate, subtype="FLOAT")
    tracks.analyse(file, denoiser)
    return file


@pytest.mark.parametrize("strength_db", [0.0, 12.0])
def test_the_kept_mask_re_renders_exactly_what_the_stream_outputs(random_model, strength_db):
    denoiser = Denoiser(random_model, device="cpu", remove_hum=True)
    audio = music_like(2, 70_000, 44100, seed=3)
    recording = tracks.Recording()
    stream = denoiser.stream(channels=2, sample_rate=44100, strength_db=30.0, tap=recording)
    stream.process(audio[:, :40_000])
    stream.process(audio[:, 40_000:])
    stream.finish()
    shaped = render.shape_mask(recording.masks(), exponent=denoiser.mask_exponent)
    expected = denoiser.denoise(audio, 44100, strength_db=strength_db)
    whole = render.resynthesise(recording.audio(), shaped, strength_db=strength_db)
    np.testing.assert_array_equal(whole, expected)
    for start, stop in ((0, 1), (511, 1537), (33_333, 70_000), (69_999, 70_000)):
        part = render.resynthesise(recording.audio(), shaped, strength_db=strength_db, start=start, stop=stop)
        np.testing.assert_array_equal(part, expected[:, start:stop])


def test_a_range_at_another_rate_matches_the_denoised_file(tmp_path, random_model):
    denoiser = Denoiser(random_model, device="cpu")
    audio = music_like(1, 48_000 * 3, 48_000, seed=4)
    file = analysed(tmp_path, denoiser, audio, 48_000)
    expected = denoiser.denoise(audio, 48_000, strength_db=18.0)
    whole = tracks.render_range(file, strength_db=18.0, remove_hum=True, start_s=0.0, end_s=10.0)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    part = tracks.render_range(file, strength_db=18.0, remove_hum=True, start_s=1.25, end_s=2.0)
    assert part.shape == (1, 36_000)
    np.testing.assert_allclose(part, expected[:, 60_000:96_000], atol=1e-4)


def test_strength_zero_without_the_hum_stage_gives_back_the_input(tmp_path, random_model):
    file = analysed(tmp_path, Denoiser(random_model, device="cpu"), music_like(2, 30_000, 44100), 44100)
    out = tracks.render_range(file, strength_db=0.0, remove_hum=False, start_s=0.0, end_s=1.0)
    np.testing.assert_allclose(out, sf.read(file.input_path, dtype="float32")[0].T, atol=1e-5)


def test_the_spectrograms_share_one_scale_and_the_floor_follows_the_strength(tmp_path):
    silencer = UNet(UNetConfig(base_width=2))  # a mask of 0 everywhere: every bin sits on the floor
    torch.nn.init.zeros_(silencer.head.weight)
    torch.nn.init.constant_(silencer.head.bias, -50.0)
    rng = np.random.default_rng(0)
    hiss = (0.01 * rng.standard_normal((1, 88_200))).astype(np.float32)
    file = analysed(tmp_path, Denoiser(silencer.eval(), device="cpu"), music_like(1, 88_200, 44100) + hiss, 44100)
    mild = tracks.noise_floor(file, strength_db=3.0, remove_hum=True)
    strong = tracks.noise_floor(file, strength_db=40.0, remove_hum=True)
    assert mild["hiss_before_db"] == strong["hiss_before_db"]
    assert mild["hiss_after_db"] == pytest.approx(mild["hiss_before_db"] - 3.0, abs=0.1)
    assert strong["hiss_after_db"] == pytest.approx(mild["hiss_before_db"] - 40.0, abs=0.1)
    png = tracks.spectrogram(file, which="after", strength_db=30.0, remove_hum=True, start_s=0.5, end_s=1.0)
    assert png.startswith(b"\x89PNG")
    rows = render.row_bins()
    assert rows.shape[0] == render.SPECTROGRAM_ROWS and rows.min() == 0 and rows.max() == 511
    assert np.all(np.diff(rows[:, 0]) >= 0)


def test_a_whole_file_render_stands_down_for_a_newer_one_and_previews_have_their_own_worker(tmp_path, random_model):
    workspace = tracks.Workspace(Denoiser(random_model, device="cpu"), workers=1)
    try:
        file = analysed(tmp_path, workspace.denoisers[True], music_like(1, 44_100, 44100), 44100)
        settings = {"strength_db": 20.0, "remove_hum": True}
        pool, older = workspace.render_job(file, start_s=0.0, end_s=1e9, **settings)
        _, newer = workspace.render_job(file, start_s=0.0, end_s=1e9, **settings)
        assert pool is workspace.render_pool
        with pytest.raises(tracks.Superseded):
            older()
        assert newer().shape == (1, 44_100)
        pool, preview = workspace.render_job(file, start_s=0.25, end_s=0.5, **settings)
        assert pool is workspace.preview_pool and preview().shape == (1, 11_025)
    finally:
        workspace.close()
    assert not workspace.root.exists()


def test_download_names_are_safe_whatever_the_upload_was_called():
    assert download_name("../../etc/passwd", ".wav") == "passwd-denoised.wav"
    assert download_name("Side A: take 1.flac", ".flac") == "Side_A_take_1-denoised.flac"
    assert download_name("..", ".wav") == "audio-denoised.wav"


@pytest.fixture()
def small_server(random_model):
    app = create_app(Denoiser(random_model, device="cpu"), max_upload_mb=0.5, workers=1)
    with running_app(app) as url:
        yield url, app.state.workspace.root


def request(url: str, *, data: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_uploads_stay_in_the_private_folder_which_goes_away_on_shutdown(tmp_path, random_model):
    app = create_app(Denoiser(random_model, device="cpu"), max_upload_mb=0.5, workers=1)
    root = app.state.workspace.root
    assert root.stat().st_mode & 0o777 == 0o700
    source = tmp_path / "take.wav"
    sf.write(source, music_like(1, 4000, 8000).T, 8000, subtype="PCM_16")
    with running_app(app) as url:
        status, body = request(f"{url}/api/files?name=..%2F..%2Fescape.wav", data=source.read_bytes(), method="POST")
        assert status == 200
        file_id = json.loads(body)["id"]
        assert [path.relative_to(root).as_posix() for path in root.rglob("input*")] == [f"{file_id}/input.wav"]
        assert not (root.parent / "escape.wav").exists()
        status, body = request(f"{url}/api/files/{file_id}/after.wav?strength_db=200")
        assert status == 422
    assert not root.exists()


def test_an_upload_over_the_limit_is_refused_with_its_name_and_size(small_server):
    url, root = small_server
    # As browsers and curl send a large body: headers first, asking whether to go on. The server answers from
    # the declared length without reading anything (a client that sends the body anyway may find the
    # connection closed under it).
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=30)
    connection.putrequest("POST", "/api/files?name=long.wav")
    connection.putheader("Content-Length", "600000")
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    assert status == 413
    assert json.loads(body)["detail"] == "long.wav: 0.6 MB is over the upload limit of 0.5 MB (--max-upload-mb)"
    assert not any(root.iterdir())


def test_a_corrupt_upload_reports_its_own_name_and_the_server_keeps_serving(small_server, tmp_path):
    url, _ = small_server
    status, body = request(f"{url}/api/files?name=noise.flac", data=b"fLaC" + bytes(100), method="POST")
    file_id = json.loads(body)["id"]
    status = _wait_for_state(url, file_id)
    assert status["state"] == "error" and status["error"].startswith("noise.flac: ")
    assert request(f"{url}/api/files/{file_id}/after.wav")[0] == 409
    good = tmp_path / "good.wav"
    sf.write(good, music_like(2, 8000, 16000).T, 16000, subtype="PCM_24")
    file_id = json.loads(request(f"{url}/api/files?name=good.wav", data=good.read_bytes(), method="POST")[1])["id"]
    assert _wait_for_state(url, file_id)["state"] == "done"
    status, body = request(f"{url}/api/files/{file_id}/download?strength_db=10&format=flac")
    assert status == 200
    tmp_path.joinpath("out.flac").write_bytes(body)
    assert sf.info(str(tmp_path / "out.flac")).subtype == "PCM_24"
    assert request(f"{url}/api/files/{file_id}/download?format=mp4")[0] == 400


def _wait_for_state(url: str, file_id: str) -> dict:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads(request(f"{url}/api/files/{file_id}")[1])
        if status["state"] in ("done", "error"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{file_id} did not finish")


def test_the_command_serves_the_page_and_stops_cleanly_on_interrupt(tiny_checkpoint):
    port = free_port()
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "serve", "--port", str(port), "--no-browser", "--model", str(tiny_checkpoint),
         "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    try:
        first_line = process.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in first_line
        page = _get_when_up(f"http://127.0.0.1:{port}/")
        assert b"<title>cassette-denoise</title>" in page
        assert request(f"http://127.0.0.1:{port}/static/app.js")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def _get_when_up(url: str) -> bytes:
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            return request(url)[1]
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_only_this_computers_addresses_pass_without_a_warning_and_a_bad_port_is_a_usage_error():
    from cassette_denoise.cli import main
    from cassette_denoise.cli.serve import host_warning

    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "anyone who can reach this computer" in host_warning("0.0.0.0")
    assert main(["serve", "--port", "70000", "--no-browser"]) == 2
    assert main(["serve", "--max-upload-mb", "0", "--no-browser"]) == 2


def test_registering_the_command_imports_nothing_heavy():
    code = ("import argparse, sys; from cassette_denoise.cli import serve; "
            "serve.register(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
