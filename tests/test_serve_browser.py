"""The listening page in a real headless Chromium against the real server.

One server (the bundled model) and one browser serve the whole module; each test starts from a fresh page.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from serve_fixtures import chromium, running_app
from conftest import music_like

pytest.importorskip("fastapi")
pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cassette-example.flac"
CONSOLE_SCRIPT = Path(sys.executable).with_name("cassette-denoise")
MAX_UPLOAD_MB = 1.0


@pytest.fixture(scope="module")
def server():
    from cassette_denoise.denoiser import Denoiser
    from cassette_denoise.serve.app import create_app

    app = create_app(Denoiser.from_pretrained(device="cpu"), max_upload_mb=MAX_UPLOAD_MB, workers=2)
    with running_app(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.fixture()
def page(server, browser):
    browser.get(server)
    wait_for(lambda: browser.execute_script("return !!window.cassette"), what="the page to start")
    return browser


@pytest.fixture(scope="module")
def short_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    files = {}
    for name, seed in (("first.wav", 1), ("second.wav", 2)):
        files[name] = folder / name
        sf.write(files[name], music_like(1, 2 * 22050, 22050, seed=seed).T, 22050, subtype="PCM_16")
    files["broken.wav"] = folder / "broken.wav"
    files["broken.wav"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio at all")
    files["too-large.wav"] = folder / "too-large.wav"
    sf.write(files["too-large.wav"], np.zeros((int(MAX_UPLOAD_MB * 2**20) // 2 + 1000, 1)), 44100, subtype="PCM_16")
    return files


def wait_for(condition, *, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def upload(page, *paths: Path) -> None:
    picker = page.find_element(By.ID, "picker")
    # The input hides behind its drop zone; chromedriver types paths only into a displayed input.
    page.execute_script("arguments[0].style.display = 'block'", picker)
    picker.send_keys("\n".join(str(path) for path in paths))
    page.execute_script("arguments[0].style.display = ''", picker)


def card_states(page) -> dict[str, str]:
    """File name → the card's state (uploading, queued, running, done, error)."""
    return page.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('.file')]"
        ".map(card => [card.querySelector('.name').textContent, card.dataset.state]))")


def wait_until_settled(page, names: list[str], *, timeout_s: float = 40.0) -> dict[str, str]:
    def settled():
        states = card_states(page)
        return states if all(states.get(name) in ("done", "error") for name in names) else None

    return wait_for(settled, what=f"{names} to finish", timeout_s=timeout_s)


def player_state(page) -> dict:
    return page.execute_script("""
        const card = window.cassette.cards.active, player = card.player;
        const after = player.buffers.after.getChannelData(0), before = player.buffers.before.getChannelData(0);
        let afterEnergy = 0, removedEnergy = 0;
        for (let i = 0; i < after.length; i++) {
            afterEnergy += after[i] * after[i];
            removedEnergy += (before[i] - after[i]) ** 2;
        }
        return {position: player.position(), now: performance.now() / 1000, mode: player.mode,
                playing: player.playing, renders: Number(card.element.dataset.renders),
                afterEnergy, removedEnergy, download: card.element.querySelector('.download').href};
    """)


def test_example_plays_switches_at_the_same_position_rerenders_and_downloads_the_cli_output(page, tmp_path):
    cli_output = tmp_path / "cli.flac"
    # The console script denoises at strength 0 dB while the page works, to compare with the download.
    cli = subprocess.Popen([str(CONSOLE_SCRIPT), "denoise", str(EXAMPLE), "-o", str(cli_output), "--strength-db", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    upload(page, EXAMPLE)
    assert wait_until_settled(page, [EXAMPLE.name]) == {EXAMPLE.name: "done"}

    page.find_element(By.CSS_SELECTOR, ".play").click()
    wait_for(lambda: player_state(page)["position"] > 0.5, what="playback to advance")
    for key, mode in (("x", "before"), ("x", "after"), ("r", "removed"), ("b", "after")):
        first = player_state(page)
        ActionChains(page).send_keys(key).perform()
        second = player_state(page)
        assert second["mode"] == mode and second["playing"]
        # The position moved on only by the time that passed: switching never restarts or jumps.
        assert abs((second["position"] - first["position"]) - (second["now"] - first["now"])) < 0.05

    at_default = player_state(page)
    slider = page.find_element(By.CSS_SELECTOR, ".strength")
    slider.send_keys(Keys.HOME)  # 0 dB: nothing is attenuated
    wait_for(lambda: player_state(page)["renders"] > at_default["renders"], what="the re-render")
    at_zero = player_state(page)
    # The example's hiss is about 1 % of its energy: what stands out is how much less comes out at 0 dB.
    assert at_zero["afterEnergy"] > at_default["afterEnergy"] * 1.005
    assert at_zero["removedEnergy"] < at_default["removedEnergy"] * 0.5
    assert "strength_db=0" in at_zero["download"]

    with urllib.request.urlopen(at_zero["download"], timeout=60) as response:
        assert 'filename="cassette-example-denoised.flac"' in response.headers["content-disposition"]
        (tmp_path / "page.flac").write_bytes(response.read())
    assert cli.wait(timeout=60) == 0, cli.stderr.read()
    downloaded, rate = sf.read(tmp_path / "page.flac", dtype="float64")
    expected, expected_rate = sf.read(cli_output, dtype="float64")
    assert rate == expected_rate and downloaded.shape == expected.shape
    assert sf.info(str(tmp_path / "page.flac")).subtype == sf.info(str(cli_output)).subtype
    difference_db = 10 * np.log10(np.sum((downloaded - expected) ** 2) / np.sum(expected**2) + 1e-30)
    assert difference_db <= -90


def test_a_corrupt_upload_shows_its_error_and_the_next_upload_works(page, short_files):
    upload(page, short_files["broken.wav"])
    assert wait_until_settled(page, ["broken.wav"]) == {"broken.wav": "error"}
    message = page.find_element(By.CSS_SELECTOR, ".file[data-state=error] .error").text
    assert message.startswith("broken.wav:") and "cassette-denoise-serve" not in message

    upload(page, short_files["first.wav"])
    assert wait_until_settled(page, ["first.wav"])["first.wav"] == "done"


def test_two_uploads_at_once_both_finish(page, short_files):
    upload(page, short_files["first.wav"], short_files["second.wav"])
    assert wait_until_settled(page, ["first.wav", "second.wav"]) == {"first.wav": "done", "second.wav": "done"}


def test_a_file_over_the_limit_gets_a_clear_message(page, short_files):
    upload(page, short_files["too-large.wav"])
    assert wait_until_settled(page, ["too-large.wav"]) == {"too-large.wav": "error"}
    message = page.find_element(By.CSS_SELECTOR, ".file[data-state=error] .error").text
    assert message.startswith("too-large.wav:") and f"limit of {MAX_UPLOAD_MB:g} MB" in message
