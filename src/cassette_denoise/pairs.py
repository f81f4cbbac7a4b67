"""Training pairs on disk: clean music excerpts and the same excerpts with cassette noise.

The pairing of the seed project, made reproducible: random excerpts of clean music, each with either
a recorded blank-tape noise added at a random gain, or run through the cassette simulator. With
recorded noise the music is never rescaled: the clean file is the excerpt itself and the noisy file
is the excerpt plus noise, so the two differ by the noise only. With the simulator the clean file is
its target (the music through the tape's signal path) and the noisy file its output.

Every example draws from its own generator, seeded by ``(seed, index)``, so the pairs do not depend
on the processing order.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from cassette_denoise.audio import (
    MODEL_SAMPLE_RATE,
    find_audio_files,
    output_length,
    probe,
    read_audio,
    resample,
    write_audio,
)
from cassette_denoise.simulate import params_to_json, simulate
from cassette_denoise.simulate._dsp import rms_dbfs

logger = logging.getLogger(__name__)

FORMAT_SUBTYPES = {"wav": "PCM_24", "flac": "PCM_24"}  # 24 bits keep -75 dBFS hiss and quiet music intact
MAX_PEAK = 0.99  # written pairs peak at most here, so fixed-point files never clip
CSV_COLUMNS = (
    "index", "noisy", "clean", "kind", "source", "source_offset_s", "samples",
    "noise_file", "noise_gain_db", "preset", "snr_db", "headroom_gain_db",
)


def noise_excerpt(
    noise: np.ndarray, *, channels: int, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int]]:
    """Cut ``(channels, samples)`` from a noise recording ``(noise_channels, length)`` at a random offset,
    looping it where it is shorter.

    Output channel ``c`` takes noise channel ``c % noise_channels``; when a recording has fewer channels
    than the music, each reuse starts at its own offset so that the channels stay uncorrelated.
    Returns the excerpt and the offsets drawn (one per reuse).
    """
    noise_channels, length = noise.shape
    offsets = [int(rng.integers(length)) for _ in range(-(-channels // noise_channels))]
    excerpt = np.empty((channels, samples), np.float32)
    for channel in range(channels):
        start = offsets[channel // noise_channels]
        excerpt[channel] = np.take(noise[channel % noise_channels], np.arange(start, start + samples), mode="wrap")
    return excerpt, offsets


def add_noise(clean: np.ndarray, noise: np.ndarray, *, gain_db: float) -> np.ndarray:
    """``clean + noise`` with the noise scaled by ``gain_db``; the music keeps its level.

    Both are ``(channels, samples)``.
    """
    return (clean + np.float32(10.0 ** (gain_db / 20.0)) * noise).astype(np.float32, copy=False)


def headroom_gain(*signals: np.ndarray) -> float:
    """Common gain (<= 1) that brings the loudest peak of ``signals`` to at most ``MAX_PEAK``."""
    peak = max(float(np.max(np.abs(signal))) for signal in signals)
    return MAX_PEAK / peak if peak > MAX_PEAK else 1.0


def make_pairs(
    clean_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    count: int,
    seed: int,
    noise_dir: str | os.PathLike | None = None,
    duration_s: float = 10.0,
    file_format: str = "wav",
    noise_fraction: float = 0.5,
    noise_gain_db: tuple[float, float] = (-6.0, 12.0),
    preset: str = "training",
) -> list[dict]:
    """Write ``count`` pairs ``NNNNN_noisy.<fmt>``/``NNNNN_clean.<fmt>`` (44.1 kHz) and a manifest.

    Excerpts are ``duration_s`` long (a whole file where it is shorter), drawn from the files under
    ``clean_dir`` in proportion to their length. With ``noise_dir``, a share ``noise_fraction`` of the
    pairs adds a recording from there at a gain drawn from ``noise_gain_db``; the others (all of
    them without ``noise_dir``) use the simulator with ``preset``. Pairs whose peak would exceed
    ``MAX_PEAK`` are attenuated together (``headroom_gain_db`` in the manifest).

    Returns:
        The manifest's examples, also written to ``out_dir/manifest.json`` and ``manifest.csv``.
    """
    if count < 1 or duration_s <= 0 or not 0.0 <= noise_fraction <= 1.0 or file_format not in FORMAT_SUBTYPES:
        raise ValueError(
            f"invalid options: count={count}, duration_s={duration_s}, noise_fraction={noise_fraction}, "
            f"file_format={file_format!r}"
        )
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    sources = _audio_files(clean_dir)
    noises = _audio_files(Path(noise_dir)) if noise_dir is not None else []
    # Lengths at the pair rate, from the headers: excerpts are drawn before any file is decoded.
    lengths = np.array([
        output_length(info.frames, info.sample_rate, MODEL_SAMPLE_RATE) for info in map(probe, sources)
    ])
    wanted = max(1, round(duration_s * MODEL_SAMPLE_RATE))

    plan = defaultdict(list)  # source index -> [(example index, offset, samples, rng)]
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        source = int(rng.choice(len(sources), p=lengths / lengths.sum()))
        samples = min(wanted, int(lengths[source]))
        offset = int(rng.integers(lengths[source] - samples + 1))
        plan[source].append((index, offset, samples, rng))

    out_dir.mkdir(parents=True, exist_ok=True)
    noise_cache: dict[int, np.ndarray] = {}
    examples = []
    for source, items in plan.items():  # each source is decoded once
        music = _load(sources[source])
        for index, offset, samples, rng in items:
            excerpt = music[:, offset : offset + samples]
            example = {
                "index": index,
                "noisy": f"{index:05d}_noisy.{file_format}",
                "clean": f"{index:05d}_clean.{file_format}",
                "source": sources[source].relative_to(clean_dir).as_posix(),
                "source_offset_samples": offset, "source_offset_s": offset / MODEL_SAMPLE_RATE,
                "samples": samples, "channels": excerpt.shape[0], "noise": None, "simulator": None,
            }
            if noises and rng.random() < noise_fraction:
                which = int(rng.integers(len(noises)))
                if which not in noise_cache:
                    noise_cache[which] = _load(noises[which])
                noise, offsets = noise_excerpt(noise_cache[which], channels=excerpt.shape[0], samples=samples, rng=rng)
                gain_db = rng.uniform(*noise_gain_db)
                clean, noisy = excerpt, add_noise(excerpt, noise, gain_db=gain_db)
                example["kind"] = "recorded-noise"
                example["noise"] = {
                    "file": noises[which].relative_to(Path(noise_dir)).as_posix(),
                    "offsets_samples": offsets,
                    "gain_db": gain_db,
                }
            else:
                simulation = simulate(excerpt, MODEL_SAMPLE_RATE, rng=rng, preset=preset)
                clean, noisy = simulation.target, simulation.noisy
                example["kind"] = "simulator"
                example["simulator"] = {"preset": preset, "params": params_to_json(simulation.params)}
            gain = headroom_gain(clean, noisy)
            snr_db = rms_dbfs(clean) - rms_dbfs(noisy - clean)
            example["snr_db"] = float(snr_db) if np.isfinite(snr_db) else None  # silent music or no noise
            example["headroom_gain_db"] = float(20.0 * np.log10(gain))
            subtype = FORMAT_SUBTYPES[file_format]
            write_audio(out_dir / example["clean"], clean * np.float32(gain), MODEL_SAMPLE_RATE, subtype=subtype)
            write_audio(out_dir / example["noisy"], noisy * np.float32(gain), MODEL_SAMPLE_RATE, subtype=subtype)
            examples.append(example)
            logger.info("pair %d/%d: %s (%s)", len(examples), count, example["noisy"], example["kind"])

    examples.sort(key=lambda example: example["index"])
    manifest = {
        "sample_rate": MODEL_SAMPLE_RATE, "seed": seed, "count": count, "duration_s": duration_s,
        "preset": preset, "noise_fraction": noise_fraction if noises else 0.0, "examples": examples,
    }
    _write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    _write_text(out_dir / "manifest.csv", _manifest_csv(examples))
    return examples


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = find_audio_files(folder)
    if not files:
        raise ValueError(f"{folder}: no audio files")
    return files


def _load(path: Path) -> np.ndarray:
    audio, sample_rate = read_audio(path)
    return resample(audio, sample_rate, MODEL_SAMPLE_RATE)


def _manifest_csv(examples: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for example in examples:
        noise, simulator = example["noise"] or {}, example["simulator"] or {}
        writer.writerow({
            **{key: example[key] for key in CSV_COLUMNS if key in example},
            "noise_file": noise.get("file", ""), "noise_gain_db": noise.get("gain_db", ""),
            "preset": simulator.get("preset", ""),
        })
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary name and rename, so a manifest is never half-written."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
