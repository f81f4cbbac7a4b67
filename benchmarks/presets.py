"""Simulator presets: how much noise each adds, what it looks like, and how fast it runs.

For every preset, simulate a fixed synthetic stereo input (5 s, 44.1 kHz, -20 dBFS RMS) with a fixed
seed; measure the RMS of all additive noise (noisy - target) and of the hiss alone; draw the noise
and target spectra; and time ``simulate`` on a 1.5 s stereo crop (the training-loader case, a fresh
draw per call). Writes ``results/presets.json``, ``results/presets.md`` and ``results/presets/*.png``.

    python benchmarks/presets.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402

from cassette_denoise.simulate import PRESETS, Hiss, simulate  # noqa: E402

SR = 44_100
SEED = 0
INPUT_S = 5.0
CROP_S = 1.5
TIMING_CALLS = 200
RESULTS = Path(__file__).parent / "results"


def synthetic_music(seconds: float) -> np.ndarray:
    """A chord of decaying harmonic notes every half second, stereo, -20 dBFS RMS: ``(2, samples)``."""
    rng = np.random.default_rng(1234)
    t = np.arange(round(seconds * SR)) / SR
    x = np.zeros((2, t.size))
    for start in np.arange(0.0, seconds, 0.5):
        pitch = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        envelope = np.where(t >= start, np.exp(-(t - start) * 3.0), 0.0)
        note = sum(np.sin(2 * np.pi * pitch * k * (t - start)) / k**1.5 for k in range(1, 20) if pitch * k < SR / 2)
        x += envelope * note * rng.uniform(0.3, 1.0, (2, 1))
    return (0.1 * x / np.sqrt(np.mean(x**2))).astype(np.float32)


def dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))


def time_simulate(crop: np.ndarray, preset: str) -> dict:
    rng = np.random.default_rng(SEED)
    simulate(crop, SR, rng=rng, preset=preset)  # warm-up
    seconds = []
    for _ in range(TIMING_CALLS):
        start = time.perf_counter()
        simulate(crop, SR, rng=rng, preset=preset)
        seconds.append(time.perf_counter() - start)
    ms = 1e3 * np.array(seconds)
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "min": float(ms.min())}


def describe(hiss) -> str | None:
    if hiss is None:
        return None
    return f"{hiss.level_db:.1f} {hiss.level_reference}" + (" + Dolby B" if hiss.dolby_b else "")


def spectrum_figure(preset: str, target: np.ndarray, noise: np.ndarray) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for signal, label in ((target, "target (music through the tape)"), (noise, "additive noise (noisy - target)")):
        freqs, psd = scipy.signal.welch(signal, SR, nperseg=8192)
        ax.semilogx(freqs[1:], 10 * np.log10(np.mean(psd, axis=0)[1:] + 1e-20), label=label)
    ax.set(xlim=(20, SR / 2), ylim=(-180, -40), xlabel="frequency (Hz)", ylabel="power density (dB re FS²/Hz)",
           title=f"preset {preset}: seed {SEED}, {INPUT_S:g} s synthetic input at -20 dBFS")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return figure


def main() -> None:
    (RESULTS / "presets").mkdir(parents=True, exist_ok=True)
    music = synthetic_music(INPUT_S)
    crop = music[:, : round(CROP_S * SR)]
    rows = []
    for preset in PRESETS:
        result = simulate(music, SR, rng=np.random.default_rng(SEED), preset=preset)
        noise = result.noisy - result.target
        hiss = result.params.hiss
        figure = spectrum_figure(preset, result.target, noise)
        figure.savefig(RESULTS / "presets" / f"{preset}.png", dpi=90)
        plt.close(figure)
        rows.append({
            "preset": preset,
            "noise_rms_dbfs": dbfs(noise),
            "hiss_rms_dbfs": dbfs(Hiss.noise(result.target, SR, hiss)) if hiss else None,
            "hiss_drawn": describe(hiss),
            "effects": [name for name, value in vars(result.params).items() if value is not None],
            "simulate_ms_1.5s_stereo": time_simulate(crop, preset),
            "picture": f"presets/{preset}.png",
        })
    record = {
        "input": f"synthetic chords, {INPUT_S:g} s stereo {SR} Hz, -20 dBFS RMS; timing on the first {CROP_S:g} s",
        "seed": SEED, "timing_calls": TIMING_CALLS,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs "
                   f"(load average {os.getloadavg()[0]:.1f}), Python {platform.python_version()}",
        "presets": rows,
    }
    (RESULTS / "presets.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# Simulator presets",
        "",
        f"Input: {record['input']}; seed {SEED}. Noise = noisy - target (all additive noise); hiss = the hiss",
        "alone, as added (after any Dolby B decoding). Time: `simulate` (sample + apply) on a 1.5 s stereo crop,",
        f"{TIMING_CALLS} calls with fresh draws (random presets switch effects on and off per draw); "
        f"{record['machine']}. Made by `benchmarks/presets.py`.",
        "",
        "| preset | noise dBFS | hiss dBFS | hiss drawn | simulate ms min / median / p90 | spectrum |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        timing = row["simulate_ms_1.5s_stereo"]
        hiss_dbfs = f"{row['hiss_rms_dbfs']:.1f}" if row["hiss_rms_dbfs"] is not None else "-"
        lines.append(
            f"| {row['preset']} | {row['noise_rms_dbfs']:.1f} | {hiss_dbfs} | {row['hiss_drawn'] or '-'} "
            f"| {timing['min']:.1f} / {timing['median']:.1f} / {timing['p90']:.1f} "
            f"| [{row['preset']}.png]({row['picture']}) |"
        )
    (RESULTS / "presets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
