"""Where an estimate's LSDf80 against a reference comes from: by frequency band and by how far the
reference stands above the metric's floor.

    python benchmarks/lsd_breakdown.py [--model PATH] [--estimate NAME=WAV ...] [--out results/lsd_breakdown.json]

By default it scores the real seed-cassette excerpt (``../shared/data/seed-cassette``): the untouched
transfer, the seed project's output and our output (the bundled model, or ``--model``'s checkpoint
with its sidecar's calibration, at the default settings, written as the CLI writes it), each against
``ahrep_clean.wav``. A diagnosis, not a score to tune on: nothing is chosen by it.

For each estimate it writes the LSDf80, and per cell (a frequency band, or a class of reference level in
6-12 kHz) the share of bins, the share of all squared log-difference, the mean difference
(reference − estimate, dB; negative: the estimate has more power) and what the LSDf80 would be with that
cell's error removed (``lsd_without_db``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import _common
from cassette_denoise import metrics
from cassette_denoise.audio import read_audio
from cassette_denoise.denoiser import Denoiser

SEED_CASSETTE_DIR = _common.SHARED_DIR / "data" / "seed-cassette"
FLOOR_DB = 80.0
BANDS_HZ = (0, 2000, 4000, 6000, 8000, 9000, 10000, 11000, 12000, 16000, 22050)
#: The band where the real excerpt's remaining error lies, split by the reference's level over the floor.
LEVEL_BAND_HZ = (6000, 12000)
LEVELS_DB = (0, 1, 6, 15, 30, 200)


def breakdown(reference: np.ndarray, estimate: np.ndarray, *, sample_rate: int) -> dict:
    """LSDf80 of ``estimate`` against ``reference`` (both ``(channels, samples)``) and where it comes from."""
    difference = metrics.log_spectral_difference(reference, estimate, floor_db=FLOOR_DB)  # (ch, frames, bins)
    power_ref = metrics.power_spectrogram(np.atleast_2d(reference).astype(np.float64))
    floor = metrics.spectral_floor(power_ref, floor_db=FLOOR_DB)
    above_floor_db = 10 * np.log10(np.maximum(power_ref, floor) / floor)
    frequencies = np.fft.rfftfreq(metrics.LSD_N_FFT, 1 / sample_rate)
    total = float(np.sum(difference**2))

    def lsd_of(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(values**2, axis=-1)).mean())

    def cell(selected: np.ndarray) -> dict:
        """``selected``: a boolean mask shaped like ``difference``."""
        without = np.where(selected, 0.0, difference)
        return {
            "share_of_bins": float(selected.mean()),
            "share_of_squared_error": float(np.sum(difference[selected] ** 2) / total) if total else 0.0,
            "mean_difference_db": float(difference[selected].mean()) if selected.any() else None,
            "lsd_without_db": lsd_of(without),
        }

    def in_band(low: float, high: float) -> np.ndarray:
        return np.broadcast_to((frequencies >= low) & (frequencies < high), difference.shape)

    bands = [{"band_hz": [low, high], **cell(in_band(low, high))} for low, high in zip(BANDS_HZ[:-1], BANDS_HZ[1:])]
    levels = [{"reference_above_floor_db": [low, high],
               **cell(in_band(*LEVEL_BAND_HZ) & (above_floor_db >= low) & (above_floor_db < high))}
              for low, high in zip(LEVELS_DB[:-1], LEVELS_DB[1:])]
    return {"lsd_f80_db": lsd_of(difference), "bands": bands,
            f"levels_{LEVEL_BAND_HZ[0]}_{LEVEL_BAND_HZ[1]}_hz": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint to run as ours (default: the bundled model)")
    parser.add_argument("--estimate", action="append", default=[], metavar="NAME=WAV",
                        help="a denoised version of ahrep_cassette.wav to break down too (repeatable)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR / "lsd_breakdown.json")
    args = parser.parse_args()

    reference, sample_rate = read_audio(SEED_CASSETTE_DIR / "ahrep_clean.wav")
    estimates = {"input": SEED_CASSETTE_DIR / "ahrep_cassette.wav",
                 "seed project's model": SEED_CASSETTE_DIR / "ahrep_seed_model_output.wav"}
    with tempfile.TemporaryDirectory() as scratch:
        ours = Path(scratch) / "ours.wav"
        denoiser = Denoiser.from_checkpoint(args.model) if args.model else Denoiser.from_pretrained()
        denoiser.denoise_file(estimates["input"], ours)
        estimates[f"ours ({args.model.name if args.model else 'bundled'}, defaults)"] = ours
        estimates.update(dict(item.split("=", 1) for item in args.estimate))
        results = {}
        for name, path in estimates.items():
            estimate, rate = read_audio(Path(path))
            if rate != sample_rate:
                raise ValueError(f"{path}: sample rate {rate}, the reference's is {sample_rate}")
            length = min(reference.shape[1], estimate.shape[1])
            results[name] = breakdown(reference[:, :length], estimate[:, :length], sample_rate=sample_rate)
            print(f"{name}: LSDf80 {results[name]['lsd_f80_db']:.3f} dB", flush=True)
    _common.write_json(args.out, {"benchmark": "lsd_breakdown", "command": _common.command_line(),
                                  "reference": "ahrep_clean.wav", "floor_db": FLOOR_DB, "estimates": results})


if __name__ == "__main__":
    main()
