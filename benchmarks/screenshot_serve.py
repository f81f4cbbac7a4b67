"""Take docs/serve.png: the listening page after denoising the bundled example, in headless Chromium.

Starts the real app (bundled model) on a free 127.0.0.1 port, uploads ``examples/cassette-example.flac``
through the page, plays it for a moment, zooms both spectrograms to a few seconds and saves the window.
Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``[test]`` extra).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from _common import REPO_DIR
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.serve.app import create_app


def wait_for(condition, *, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not get there in time")
        time.sleep(0.1)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=REPO_DIR / "examples" / "cassette-example.flac")
    parser.add_argument("--output", type=Path, default=REPO_DIR / "docs" / "serve.png")
    parser.add_argument("--zoom-s", type=float, nargs=2, default=(1.0, 5.0), metavar=("START", "END"))
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(Denoiser.from_pretrained(), max_upload_mb=512, workers=2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: server.started)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=1180,1180"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: driver.execute_script("return !!window.cassette"))
        picker = driver.find_element(By.ID, "picker")
        driver.execute_script("arguments[0].style.display = 'block'", picker)
        picker.send_keys(str(args.input.resolve()))
        driver.execute_script("arguments[0].style.display = ''", picker)
        wait_for(lambda: driver.execute_script("return document.querySelector('.file').dataset.state === 'done'"))
        driver.execute_script("window.cassette.cards.active.zoom(arguments[0], arguments[1])", *args.zoom_s)
        driver.find_element(By.CSS_SELECTOR, ".play").click()
        time.sleep(2.5)
        wait_for(lambda: driver.execute_script(
            "return [...document.querySelectorAll('.canvas img')].every(image => image.complete && image.naturalWidth)"
            " && document.querySelector('.floor-text').textContent.length > 0"))
        time.sleep(0.5)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.output))
        print(f"wrote {args.output}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
