"""How soon the listening page plays a new strength or hum setting, end to end, on a long file.

Starts the real app (bundled model) and headless Chromium (see ``_serve_page``), uploads one cached stereo
44.1 kHz file (default 5 minutes, ``_common.input_file``) through the page, starts playback in the middle and
changes the settings one after another. For each change it records, on the page's own clock, the time until
the re-rendered seconds from the playhead play (``preview_s``) and until the whole file is replaced
(``whole_s``). Writes ``results/serve_page_latency.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from _common import RESULTS_DIR, command_line, input_file, machine_info, write_json
from _serve_page import page, upload_and_wait, wait_for

CHANGES = ({"strength_db": 12}, {"strength_db": 45}, {"hum": False}, {"strength_db": 20}, {"hum": True})

CHANGE_SCRIPT = """
const [update] = arguments, card = window.cassette.cards.active;
window.changeStarted = performance.now();
window.counts = [Number(card.element.dataset.previews || 0), Number(card.element.dataset.renders)];
if ("strength_db" in update) {
  const slider = card.element.querySelector(".strength");
  slider.value = update.strength_db;
  slider.dispatchEvent(new Event("change"));
} else {
  const box = card.element.querySelector(".hum");
  box.checked = update.hum;
  box.dispatchEvent(new Event("change"));
}
"""
PROGRESS_SCRIPT = """
const card = window.cassette.cards.active, now = performance.now();
const previews = Number(card.element.dataset.previews || 0), renders = Number(card.element.dataset.renders);
if (previews > window.counts[0] && !window.previewAt) window.previewAt = now;
if (renders > window.counts[1] && !window.wholeAt) window.wholeAt = now;
return window.previewAt && window.wholeAt ?
  [(window.previewAt - window.changeStarted) / 1000, (window.wholeAt - window.changeStarted) / 1000] : null;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "serve_page_latency.json")
    args = parser.parse_args()
    workers = 2
    # The server's torch threads: each of its workers' share of the cores.
    threads = max(1, (os.cpu_count() or 1) // workers)
    document = {"command": command_line(), "machine": machine_info(threads=threads), "duration_s": args.duration_s,
                "workers": workers, "changes": []}
    source = input_file(args.duration_s)
    with page(width=1280, height=1000, workers=workers) as driver:
        started = time.perf_counter()
        upload_and_wait(driver, source, timeout_s=3600)
        document["upload_to_playable_s"] = round(time.perf_counter() - started, 2)
        driver.execute_script("window.cassette.cards.active.player.seek(arguments[0])", args.duration_s / 2)
        driver.find_element(By.CSS_SELECTOR, ".play").click()
        for change in CHANGES:
            driver.execute_script("window.previewAt = null; window.wholeAt = null;")
            driver.execute_script(CHANGE_SCRIPT, change)
            preview_s, whole_s = wait_for(lambda: driver.execute_script(PROGRESS_SCRIPT), timeout_s=120, poll_s=0.01)
            document["changes"].append({**change, "preview_s": round(preview_s, 3), "whole_s": round(whole_s, 3)})
            print(document["changes"][-1])
            time.sleep(1.0)
    write_json(args.output, document)


if __name__ == "__main__":
    main()
