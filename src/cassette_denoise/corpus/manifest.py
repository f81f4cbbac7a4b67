"""The corpus's ``manifest.json``: one entry per file with its split, source, length and how it was made."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from cassette_denoise.audio import MODEL_SAMPLE_RATE, atomic_write, find_audio_files
from cassette_denoise.corpus.sources import CorpusError, Split


MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class CorpusEntry:
    """One file of the corpus.

    ``path`` is absolute; ``params`` holds what was drawn and applied to make the file (not compared).
    """

    path: Path
    split: Split
    source: str
    duration_s: float
    params: Mapping[str, object] = field(default_factory=dict, compare=False)


def load_manifest(out_dir: str | os.PathLike) -> list[CorpusEntry]:
    """The entries of ``out_dir/manifest.json``, with absolute paths.

    Raises:
        CorpusError: no manifest, not valid JSON, another format version, or an entry lacking a field.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorpusError(f"{path}: no corpus manifest (build one with `cassette-denoise corpus`)") from None
    except (OSError, ValueError) as error:
        raise CorpusError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(document, dict):
        raise CorpusError(f"{path}: manifest is not a JSON object")
    if document.get("format_version") != MANIFEST_VERSION:
        raise CorpusError(f"{path}: manifest format {document.get('format_version')!r}, expected {MANIFEST_VERSION}")
    entries = []
    for number, item in enumerate(document.get("entries", [])):
        try:
            entry = CorpusEntry(
                path=Path(out_dir).absolute() / item["path"], split=item["split"], source=item["source"],
                duration_s=float(item["duration_s"]), params=dict(item.get("params", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CorpusError(f"{path}: entry {number} is malformed ({error!r})") from None
        if entry.split not in ("train", "validation", "test"):
            raise CorpusError(f"{path}: entry {number} has unknown split {entry.split!r}")
        entries.append(entry)
    return entries


def save_manifest(out_dir: str | os.PathLike, entries: Iterable[CorpusEntry]) -> Path:
    """Write ``out_dir/manifest.json`` atomically (paths relative to ``out_dir``, sorted)."""
    out_dir = Path(out_dir).absolute()
    rows = [
        {"path": entry.path.absolute().relative_to(out_dir).as_posix(), "split": entry.split,
         "source": entry.source, "duration_s": round(entry.duration_s, 3), "params": dict(entry.params)}
        for entry in entries
    ]
    document = {
        "format_version": MANIFEST_VERSION,
        "sample_rate": MODEL_SAMPLE_RATE,
        "entries": sorted(rows, key=lambda row: row["path"]),
    }
    text = json.dumps(document, indent=1) + "\n"
    return atomic_write(out_dir / MANIFEST_NAME, lambda temporary: temporary.write_text(text))


def minutes_by_split_and_source(entries: Iterable[CorpusEntry]) -> dict[tuple[str, str], float]:
    """Minutes of audio per ``(split, source)``, sorted by split then source."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for entry in entries:
        totals[(entry.split, entry.source)] += entry.duration_s / 60.0
    order = {"train": 0, "validation": 1, "test": 2}
    return dict(sorted(totals.items(), key=lambda item: (order.get(item[0][0], 3), item[0][1])))


def corpus_files(corpus_dir: Path, split: Split) -> list[Path]:
    """Files of one split from a corpus folder's manifest; in a plain folder of audio (no manifest),
    every 20th file in name order is ``validation`` and the rest ``train``."""
    if not (corpus_dir / MANIFEST_NAME).exists():
        files = find_audio_files(corpus_dir)
        held_out = files[::20] if len(files) > 1 else []
        if split == "validation":
            return held_out
        return [file for file in files if file not in held_out] if split == "train" else []
    return [entry.path for entry in load_manifest(corpus_dir) if entry.split == split]
