"""Scoring against clean references: the untouched input, our model, other denoisers and given files.

Everything here returns data (:class:`Row` lists); the CLI formats and prints it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np

from cassette_denoise import metrics
from cassette_denoise.audio import AUDIO_SUFFIXES, AudioError, atomic_write, read_audio, read_resampled
from cassette_denoise.peers import all_peers

if TYPE_CHECKING:
    from cassette_denoise.denoiser import Denoiser

log = logging.getLogger(__name__)

METRIC_KEYS = ("si_sdr_db", "lsd_db", "lsd_f80_db", "seg_snr_db")
#: Files written by different tools may differ by a block's rounding; more than this is a wrong pair.
MAX_LENGTH_MISMATCH_S = 0.01
INPUT_METHOD = "input"


class Method(Protocol):
    """Anything that denoises float ``(channels, samples)`` audio: our model at one strength, or a peer."""

    name: str

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Pair:
    """A noisy recording and its clean reference; ``name`` labels the rows."""

    name: str
    noisy: Path
    clean: Path


@dataclass(frozen=True)
class Skipped:
    """A method that cannot run here, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Row:
    """One method's scores on one file; ``metrics`` is None when it was skipped or failed (see ``skipped``)."""

    file: str
    method: str
    metrics: dict[str, float] | None
    seconds: float | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Ours:
    """Our model at a fixed strength."""

    denoiser: Denoiser
    strength_db: float
    is_default: bool = False

    @property
    def name(self) -> str:
        return f"ours {self.strength_db:g} dB" + (" (default)" if self.is_default else "")

    def denoise(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.denoiser.denoise(audio, sample_rate, strength_db=self.strength_db)


def our_methods(*, strengths_db: Sequence[float] | None = None, model_path: str | None = None) -> list[Method | Skipped]:
    """Our model (bundled, or the checkpoint at ``model_path``) at each strength (default: half, once
    and twice the default strength).

    The model is optional here: when it cannot be imported or loaded, one :class:`Skipped` entry
    carries the reason, so that the rest of an evaluation still runs.
    """
    try:
        from cassette_denoise.denoiser import DEFAULT_STRENGTH_DB, Denoiser

        denoiser = Denoiser.from_pretrained(model_path)
    except Exception as error:  # a missing or broken model must not stop the other scores
        log.warning("our model is unavailable: %s", error)
        return [Skipped("ours", f"model unavailable ({type(error).__name__}: {error})")]
    if strengths_db is None:
        strengths_db = (DEFAULT_STRENGTH_DB / 2, DEFAULT_STRENGTH_DB, DEFAULT_STRENGTH_DB * 2)
    return [Ours(denoiser, float(s), is_default=s == DEFAULT_STRENGTH_DB) for s in strengths_db]


def peer_methods() -> list[Method | Skipped]:
    """Every peer denoiser; those whose tool is missing as :class:`Skipped`."""
    return [peer if peer.available() else Skipped(peer.name, f"needs {peer.requirement}") for peer in all_peers()]


def evaluate_pair(
    pair: Pair,
    *,
    methods: Iterable[Method | Skipped] = (),
    denoised: Sequence[os.PathLike] = (),
) -> list[Row]:
    """Score the untouched input, each method's output and each already denoised file against ``pair.clean``.

    A method that raises is reported as a failed row; the others still run.

    Raises:
        AudioError: unreadable files, or noisy and clean that do not match in rate, channels or length.
    """
    clean, sample_rate = read_audio(pair.clean)
    noisy, noisy_rate = read_audio(pair.noisy)
    if noisy_rate != sample_rate:
        raise AudioError(f"{pair.noisy}: {noisy_rate} Hz but the clean reference {pair.clean} is {sample_rate} Hz")
    clean, noisy = _match(clean, noisy, sample_rate, what=f"{pair.noisy} against {pair.clean}")

    def scored(method: str, estimate: np.ndarray, seconds: float | None = None) -> Row:
        return Row(pair.name, method, metrics.score(clean, estimate, sample_rate=sample_rate), seconds)

    rows = [scored(INPUT_METHOD, noisy)]
    for method in methods:
        if isinstance(method, Skipped):
            rows.append(Row(pair.name, method.name, None, skipped=method.reason))
            continue
        start = time.perf_counter()
        try:
            output = method.denoise(noisy, sample_rate)
        except Exception as error:  # one failing denoiser must not hide the others' scores
            log.warning("%s failed on %s: %s", method.name, pair.noisy, error)
            rows.append(Row(pair.name, method.name, None, skipped=f"failed ({error})"))
            continue
        rows.append(scored(method.name, np.atleast_2d(output), time.perf_counter() - start))
    for path in map(Path, denoised):
        audio, _ = read_resampled(path, sample_rate=sample_rate)
        reference, audio = _match(clean, audio, sample_rate, what=f"{path} against {pair.clean}")
        rows.append(Row(pair.name, path.name, metrics.score(reference, audio, sample_rate=sample_rate)))
    return rows


def mean_rows(rows: Sequence[Row], *, label: str = "mean") -> list[Row]:
    """Per method, the mean of each metric (and of the time) over the files where it was scored."""
    means = []
    for method in dict.fromkeys(row.method for row in rows):
        scored = [row for row in rows if row.method == method and row.metrics is not None]
        if not scored:
            continue
        times = [row.seconds for row in scored if row.seconds is not None]
        means.append(Row(
            label, method,
            {key: float(np.mean([row.metrics[key] for row in scored])) for key in METRIC_KEYS},
            float(np.mean(times)) if times else None,
        ))
    return means


def load_pairs(folder: os.PathLike) -> list[Pair]:
    """The examples of a ``make-pairs`` folder.

    Reads ``manifest.json`` (a list of examples, or ``{"examples": [...]}``, each with ``noisy`` and
    ``clean`` paths relative to the folder); without a manifest, pairs ``X_noisy.*`` with
    ``X_clean.*``.

    Raises:
        AudioError: the folder is missing, the manifest is malformed, or no pairs are found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: no such folder")
    manifest = folder / "manifest.json"
    pairs = _pairs_from_manifest(manifest) if manifest.is_file() else _pairs_by_name(folder)
    if not pairs:
        raise AudioError(f"{folder}: no noisy/clean pairs found")
    return pairs


def write_json(rows: Sequence[Row], path: os.PathLike) -> None:
    """Rows as a JSON list of ``{file, method, metrics, seconds}`` (plus ``skipped`` when skipped)."""
    records = [{key: value for key, value in asdict(row).items() if key != "skipped" or value} for row in rows]
    text = json.dumps(records, indent=2) + "\n"
    atomic_write(path, lambda temp: temp.write_text(text))


def write_csv(rows: Sequence[Row], path: os.PathLike) -> None:
    """Rows as CSV, one metric per column."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["file", "method", *METRIC_KEYS, "seconds", "skipped"])
    for row in rows:
        values = [row.metrics[key] if row.metrics else "" for key in METRIC_KEYS]
        seconds = "" if row.seconds is None else row.seconds
        writer.writerow([row.file, row.method, *values, seconds, row.skipped or ""])
    atomic_write(path, lambda temp: temp.write_text(buffer.getvalue(), newline=""))


def _match(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, *, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Trim two ``(channels, samples)`` signals to the shorter length after checking they belong together."""
    if reference.shape[0] != estimate.shape[0]:
        raise AudioError(f"{what}: {estimate.shape[0]} channels against {reference.shape[0]}")
    difference = abs(reference.shape[1] - estimate.shape[1])
    if difference > MAX_LENGTH_MISMATCH_S * sample_rate:
        raise AudioError(
            f"{what}: lengths differ by {difference} samples ({estimate.shape[1]} against {reference.shape[1]})"
        )
    length = min(reference.shape[1], estimate.shape[1])
    return reference[:, :length], estimate[:, :length]


def _pairs_from_manifest(manifest: Path) -> list[Pair]:
    try:
        data = json.loads(manifest.read_text())
        examples = data["examples"] if isinstance(data, dict) else data
        pairs = []
        for example in examples:
            noisy, clean = manifest.parent / example["noisy"], manifest.parent / example["clean"]
            pairs.append(Pair(str(example.get("name") or Path(example["noisy"]).stem), noisy, clean))
        return pairs
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise AudioError(f"{manifest}: malformed manifest ({type(error).__name__}: {error})") from None


def _pairs_by_name(folder: Path) -> list[Pair]:
    files = [path for path in sorted(folder.rglob("*_clean.*")) if path.suffix.lower() in AUDIO_SUFFIXES]
    pairs = []
    for clean in files:
        stem = clean.stem.removesuffix("_clean")
        noisy = [path for path in clean.parent.glob(f"{stem}_noisy.*") if path.suffix.lower() in AUDIO_SUFFIXES]
        if noisy:
            pairs.append(Pair(str(clean.parent.relative_to(folder) / stem), noisy[0], clean))
    return pairs
