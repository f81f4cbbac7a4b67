"""Take docs/serve.png: the listening page after denoising the bundled example, in headless Chromium.

Starts the real app (bundled model) on a free 127.0.0.1 port, uploads ``examples/cassette-example.flac``
through the page, plays it for a moment, zooms both spectrograms to a few seconds and saves the window.
Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``[test]`` extra).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selenium.webdriver.common.by import By

from _common import REPO_DIR
from _serve_page import page, upload_and_wait, wait_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=REPO_DIR / "examples" / "cassette-example.flac")
    parser.add_argument("--output", type=Path, default=REPO_DIR / "docs" / "serve.png")
    parser.add_argument("--zoom-s", type=float, nargs=2, default=(1.0, 5.0), metavar=("START", "END"))
    args = parser.parse_args()
    with page(width=1180, height=1180) as driver:
        upload_and_wait(driver, args.input)
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


if __name__ == "__main__":
    main()
