"""What a Dask worker runs: denoise one file, measure it before and after, draw its thumbnail.

Tasks and outcomes are small frozen dataclasses of plain values, so they pickle cheaply and the same code runs
on a LocalCluster's processes and on ``dask worker`` processes on other machines. Expected failures (an
unreadable input, an unwritable output) come back as an outcome with the error text, not as an exception:
Dask then never retries them, and keeps its retries for workers that die.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20
# One model per worker process, loaded on its first task: a checkpoint costs far more to load than a short file
# costs to denoise. Keyed by everything the Denoiser is built from; the lock covers workers with several threads.
_DENOISERS: dict[tuple, object] = {}
_DENOISERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Settings:
    """How every file of a batch is denoised. ``model_path`` ``None`` is the bundled model."""

    strength_db: float
    remove_hum: bool
    subtype: str | None
    model_path: str | None
    model_sha256: str
    device: str = "auto"
    precision: str = "auto"
    remove_whine: bool = True
    #: Each file's noise floor from this passage of it, ``(start_s, end_s)``; ``None``: from the music.
    noise_from_s: tuple[float, float] | None = None

    def as_json(self) -> str:
        """The settings that decide the output's samples (not the device or where the model lies)."""
        return json.dumps({"strength_db": self.strength_db, "remove_hum": self.remove_hum,
                           "remove_whine": self.remove_whine,
                           "subtype": self.subtype.upper() if self.subtype else None,
                           "model_sha256": self.model_sha256, "precision": self.precision,
                           "noise_from_s": None if self.noise_from_s is None else list(self.noise_from_s)},
                          sort_keys=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.as_json().encode()).hexdigest()


@dataclass(frozen=True)
class Task:
    source: str
    destination: str
    thumbnail: str
    settings: Settings


@dataclass(frozen=True)
class Outcome:
    """A task's result; ``error`` is ``None`` when the output was written whole."""

    source: str
    error: str | None
    worker: str
    content_sha256: str | None = None
    duration_s: float | None = None
    seconds: float | None = None
    hum_hz: float | None = None
    whine_hz: tuple[float, ...] = ()
    clipped_samples: int | None = None
    peak_dbfs: float | None = None
    floors_before_db: dict | None = None
    floors_after_db: dict | None = None
    thumbnail: str | None = None


def denoise_task(task: Task) -> Outcome:
    """Denoise ``task.source`` into ``task.destination`` (atomically) and measure both; never raises for a bad
    input or output, which comes back as the outcome's ``error``."""
    from cassette_denoise.audio import AudioError
    from cassette_denoise.batch.stats import measure
    from cassette_denoise.front import passage_noise_floor

    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        content = file_sha256(task.source)
        denoiser, settings = _denoiser(task.settings), task.settings
        noise_floor = None
        if settings.noise_from_s is not None:
            start_s, end_s = settings.noise_from_s
            noise_floor = passage_noise_floor(task.source, start_s=start_s, end_s=end_s, remove_hum=denoiser.remove_hum,
                                              remove_whine=denoiser.remove_whine, what=f"--noise-from {start_s:g}-{end_s:g} s")
        Path(task.destination).parent.mkdir(parents=True, exist_ok=True)
        result = denoiser.denoise_file(task.source, task.destination, strength_db=settings.strength_db,
                                       subtype=settings.subtype, noise_floor=noise_floor)
        before, after = measure(task.source), measure(task.destination)
        thumbnail = _save_thumbnail(before, after, Path(task.thumbnail))
    except (AudioError, OSError, ValueError) as error:
        # AudioError messages already start with the file they are about.
        message = str(error) if isinstance(error, AudioError) else f"{task.source}: {error}"
        return Outcome(task.source, message, worker)
    return Outcome(
        task.source, None, worker, content_sha256=content, duration_s=result.duration_s, seconds=result.seconds,
        hum_hz=result.hum_hz, whine_hz=result.whine_hz, clipped_samples=result.clipped_samples, peak_dbfs=result.peak_dbfs,
        floors_before_db=before.floors_db, floors_after_db=after.floors_db, thumbnail=thumbnail,
    )


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def model_sha256(model_path: str | None) -> str:
    """SHA-256 of a checkpoint's weights file; ``None`` is the bundled model."""
    if model_path is not None:
        return file_sha256(model_path)
    from cassette_denoise.denoiser import BUNDLED_MODEL

    with resources.as_file(resources.files("cassette_denoise") / "weights" / f"{BUNDLED_MODEL}.safetensors") as path:
        return file_sha256(path)


def _denoiser(settings: Settings):
    from cassette_denoise.denoiser import Denoiser

    key = (settings.model_path, settings.model_sha256, settings.remove_hum, settings.remove_whine, settings.device,
           settings.precision)
    with _DENOISERS_LOCK:
        if key not in _DENOISERS:
            # Workers on other machines read the model from shared storage: check it is the one the batch hashed.
            found = model_sha256(settings.model_path)
            if found != settings.model_sha256:
                raise ValueError(f"model {settings.model_path or 'bundled'} has SHA-256 {found[:12]} on this worker, "
                                 f"the batch expects {settings.model_sha256[:12]}")
            options = {"device": settings.device, "remove_hum": settings.remove_hum,
                       "remove_whine": settings.remove_whine, "precision": settings.precision}
            _DENOISERS[key] = Denoiser.from_pretrained(settings.model_path or None, **options)
            log.info("worker %d loaded model %s", os.getpid(), settings.model_path or "bundled")
        return _DENOISERS[key]


def _save_thumbnail(before, after, path: Path) -> str:
    """Draw before/after thumbnails into ``path`` (renamed into place whole); returns the path."""
    from cassette_denoise.plots import tape_thumbnail

    path.parent.mkdir(parents=True, exist_ok=True)
    figure = tape_thumbnail(before.thumbnail_db, after.thumbnail_db)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    figure.savefig(partial, format="png", dpi=100)
    os.replace(partial, path)
    return str(path)
