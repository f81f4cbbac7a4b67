"""Training pairs on disk: clean music excerpts and the same excerpts with cassette noise.

Random excerpts of clean music, each with either a recorded blank-tape noise added at a random gain,
or run through the cassette simulator: files for tools that want pairs on disk (training here makes its
examples on the fly, :mod:`cassette_denoise.training.examples`). With
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
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cassette_denoise.audio import (
    MODEL_SAMPLE_RATE,
    atomic_write,
    find_audio_files,
    output_length,
    probe,
    read_resampled,
    write_audio,
)
from cassette_denoise.simulate import PRESETS, params_to_json, simulate
from cassette_denoise.simulate._dsp import rms_dbfs

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


@dataclass(frozen=True)
class PairFilesConfig:
    """What :func:`make_pairs` writes: ``count`` pairs of ``duration_s`` (a whole file where it is shorter)
    as ``file_format``. With noise recordings, a share ``noise_fraction`` of the pairs adds one at a gain
    drawn from ``noise_gain_db``; the others (all of them without recordings) use the simulator's ``preset``.
    """

    count: int
    seed: int
    duration_s: float = 10.0
    file_format: str = "wav"
    noise_fraction: float = 0.5
    noise_gain_db: tuple[float, float] = (-6.0, 12.0)
    preset: str = "training"

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if not 0.0 <= self.noise_fraction <= 1.0:
            raise ValueError(f"noise_fraction must be within 0-1, got {self.noise_fraction}")
        if self.file_format not in FORMAT_SUBTYPES:
            raise ValueError(f"file_format must be one of {sorted(FORMAT_SUBTYPES)}, got {self.file_format!r}")
        if self.noise_gain_db[0] > self.noise_gain_db[1]:
            raise ValueError(f"noise_gain_db must be (low, high) with low <= high, got {self.noise_gain_db}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")


def make_pairs(clean_dir: str | os.PathLike, out_dir: str | os.PathLike, *, config: PairFilesConfig,
               noise_dir: str | os.PathLike | None = None, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Write ``config.count`` pairs ``NNNNN_noisy.<fmt>``/``NNNNN_clean.<fmt>`` (44.1 kHz) and a manifest.

    Excerpts are drawn from the files under ``clean_dir`` in proportion to their length; recordings come
    from ``noise_dir``. Pairs whose peak would exceed ``MAX_PEAK`` are attenuated together
    (``headroom_gain_db`` in the manifest). ``progress`` is called with the number of pairs written so far.

    Returns:
        The manifest's examples, also written to ``out_dir/manifest.json`` and ``manifest.csv``.
    """
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    sources = _audio_files(clean_dir)
    noises = _audio_files(Path(noise_dir)) if noise_dir is not None else []
    out_dir.mkdir(parents=True, exist_ok=True)
    noise_cache: dict[int, np.ndarray] = {}

    def noise(which: int) -> tuple[np.ndarray, str]:
        if which not in noise_cache:
            noise_cache[which] = read_resampled(noises[which])[0]
        return noise_cache[which], noises[which].relative_to(Path(noise_dir)).as_posix()

    examples = []
    for source, items in _plan(sources, config).items():  # each source is decoded once
        music = read_resampled(sources[source])[0]
        for index, offset, samples, rng in items:
            example = {
                "index": index, "noisy": f"{index:05d}_noisy.{config.file_format}",
                "clean": f"{index:05d}_clean.{config.file_format}",
                "source": sources[source].relative_to(clean_dir).as_posix(),
                "source_offset_samples": offset, "source_offset_s": offset / MODEL_SAMPLE_RATE,
                "samples": samples, "channels": music.shape[0], "noise": None, "simulator": None,
            }
            use_noise = bool(noises) and rng.random() < config.noise_fraction
            clean, noisy = _pair(music[:, offset: offset + samples], example, config, rng,
                                 noise=noise(int(rng.integers(len(noises)))) if use_noise else None)
            _write_pair(out_dir, example, clean, noisy, file_format=config.file_format)
            examples.append(example)
            if progress:
                progress(len(examples))
    examples.sort(key=lambda example: example["index"])
    _write_manifests(out_dir, examples, config, noise_fraction=config.noise_fraction if noises else 0.0)
    return examples


def _plan(sources: list[Path], config: PairFilesConfig) -> dict[int, list]:
    """Which excerpt each pair takes, by source: ``{source index: [(pair index, offset, samples, rng)]}``.

    Every pair draws from its own generator, seeded by ``(seed, index)``, and lengths come from the
    headers, so the excerpts are drawn before any file is decoded and do not depend on the order of work.
    """
    lengths = np.array([output_length(info.frames, info.sample_rate, MODEL_SAMPLE_RATE) for info in map(probe, sources)])
    wanted = max(1, round(config.duration_s * MODEL_SAMPLE_RATE))
    plan = defaultdict(list)
    for index in range(config.count):
        rng = np.random.default_rng([config.seed, index])
        source = int(rng.choice(len(sources), p=lengths / lengths.sum()))
        samples = min(wanted, int(lengths[source]))
        offset = int(rng.integers(lengths[source] - samples + 1))
        plan[source].append((index, offset, samples, rng))
    return plan


def _pair(excerpt: np.ndarray, example: dict, config: PairFilesConfig, rng: np.random.Generator, *,
          noise: tuple[np.ndarray, str] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` for one excerpt ``(channels, samples)``, recording in ``example`` how it was made."""
    if noise is not None:
        recording, name = noise
        excerpt_noise, offsets = noise_excerpt(recording, channels=excerpt.shape[0], samples=excerpt.shape[1], rng=rng)
        gain_db = rng.uniform(*config.noise_gain_db)
        example["kind"] = "recorded-noise"
        example["noise"] = {"file": name, "offsets_samples": offsets, "gain_db": gain_db}
        return excerpt, add_noise(excerpt, excerpt_noise, gain_db=gain_db)
    simulation = simulate(excerpt, MODEL_SAMPLE_RATE, rng=rng, preset=config.preset)
    example["kind"] = "simulator"
    example["simulator"] = {"preset": config.preset, "params": params_to_json(simulation.params)}
    return simulation.target, simulation.noisy


def _write_pair(out_dir: Path, example: dict, clean: np.ndarray, noisy: np.ndarray, *, file_format: str) -> None:
    gain = headroom_gain(clean, noisy)
    snr_db = rms_dbfs(clean) - rms_dbfs(noisy - clean)
    example["snr_db"] = float(snr_db) if np.isfinite(snr_db) else None  # silent music or no noise
    example["headroom_gain_db"] = float(20.0 * np.log10(gain))
    subtype = FORMAT_SUBTYPES[file_format]
    write_audio(out_dir / example["clean"], clean * np.float32(gain), MODEL_SAMPLE_RATE, subtype=subtype)
    write_audio(out_dir / example["noisy"], noisy * np.float32(gain), MODEL_SAMPLE_RATE, subtype=subtype)


def _write_manifests(out_dir: Path, examples: list[dict], config: PairFilesConfig, *, noise_fraction: float) -> None:
    manifest = json.dumps({
        "sample_rate": MODEL_SAMPLE_RATE, "seed": config.seed, "count": config.count, "duration_s": config.duration_s,
        "preset": config.preset, "noise_fraction": noise_fraction, "examples": examples,
    }, indent=1, allow_nan=False) + "\n"
    atomic_write(out_dir / "manifest.json", lambda temp: temp.write_text(manifest, encoding="utf-8"))
    table = _manifest_csv(examples)
    atomic_write(out_dir / "manifest.csv", lambda temp: temp.write_text(table, encoding="utf-8"))


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = find_audio_files(folder)
    if not files:
        raise ValueError(f"{folder}: no audio files")
    return files


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
