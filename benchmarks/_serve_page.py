"""The real listening page for benchmark scripts: the app on a free 127.0.0.1 port, driven by Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import torch
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from cassette_denoise.denoiser import Denoiser
from cassette_denoise.serve.app import create_app


def wait_for(condition, *, timeout_s: float = 60.0, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not get there in time")
        time.sleep(poll_s)
    return value


@contextlib.contextmanager
def page(*, width: int, height: int, workers: int = 2, max_upload_mb: float = 2048):
    """Yields a Chromium driver with the page loaded; stops both afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # As `cassette-denoise serve` does: each worker's network gets its share of the cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    app = create_app(Denoiser.from_pretrained(), max_upload_mb=max_upload_mb, workers=workers)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: driver.execute_script("return !!window.cassette"))
        yield driver
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(30)


def upload_and_wait(driver, path: Path, *, timeout_s: float = 60.0) -> None:
    picker = driver.find_element(By.ID, "picker")
    driver.execute_script("arguments[0].style.display = 'block'", picker)
    picker.send_keys(str(path.resolve()))
    driver.execute_script("arguments[0].style.display = ''", picker)
    wait_for(lambda: driver.execute_script("return document.querySelector('.file').dataset.state === 'done'"),
             timeout_s=timeout_s)
