"""How long the listening page waits after a change of strength or of the hum switch, on a long file.

For one cached stereo 44.1 kHz file (default 5 minutes, see ``_common.input_file``) it runs the server's
own steps in-process, without HTTP: the one network pass that keeps the mask (``analyse``), then for each
setting the first 15 s from the playhead (what the page plays first), the whole file, its 16-bit WAV
encoding, the two spectrograms of the whole file and the noise floor. Each step is timed ``--repeats``
times; the results file keeps every time and the median. Writes ``results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, command_line, input_file, machine_info, write_json
from cassette_denoise.audio import encode_wav
from cassette_denoise.denoiser import Denoiser
from cassette_denoise.serve import tracks

SETTINGS = ({"strength_db": 12.0, "remove_hum": True}, {"strength_db": 40.0, "remove_hum": False})


def timed(function, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(round(time.perf_counter() - started, 4))
    return {"median_s": statistics.median(seconds), "seconds": seconds, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads: the server's share per worker with its default of one worker per core")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "serve_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    document = {"command": command_line(), "machine": machine_info(threads=args.threads),
                "duration_s": args.duration_s, "steps": []}
    source = input_file(args.duration_s)
    denoiser = Denoiser.from_pretrained(device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        file = tracks.Track("bench", source.name, Path(folder), ".wav")
        Path(folder, "input.wav").symlink_to(source)
        started = time.perf_counter()
        tracks.analyse(file, denoiser)
        document["steps"].append({"step": "analyse (network pass, kept mask)", "median_s": time.perf_counter() - started})
        for setting in SETTINGS:
            middle = args.duration_s / 2
            steps = {
                "first 15 s from the playhead": lambda: tracks.render_range(file, start_s=middle, end_s=middle + 15, **setting),
                "whole file": lambda: tracks.render_range(file, start_s=0, end_s=args.duration_s, **setting),
                "whole file as WAV": lambda: len(encode_wav(tracks.render_range(file, start_s=0, end_s=args.duration_s, **setting), 44100)),
                "spectrograms before+after, whole file": lambda: [len(tracks.spectrogram(
                    file, which=which, strength_db=setting["strength_db"], remove_hum=setting["remove_hum"],
                    start_s=0, end_s=args.duration_s)) for which in ("before", "after")],
                "noise floor": lambda: tracks.noise_floor(file, **setting)["hiss_after_db"],
            }
            for name, function in steps.items():
                row = timed(function, args.repeats)
                row.pop("result")
                document["steps"].append({"step": name, **setting, **row})
                write_json(args.output, document)
    write_json(args.output, document)
    for row in document["steps"]:
        print(f"{row['step']:<42} {row.get('strength_db', ''):>5} {row.get('remove_hum', '')!s:>5} {row['median_s']:.3f} s")


if __name__ == "__main__":
    main()
