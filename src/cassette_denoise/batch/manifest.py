"""The batch manifest: one SQLite row per input file, in the output folder.

The row says what was asked (input identity, settings and model hash), what happened (status, timing, error)
and what the report needs (noise floors, hum, clipping, warnings). Only the process that runs the batch
writes it; workers return their results to that process, so SQLite never sees concurrent writers (which it
handles badly over network file systems). A row becomes ``done`` only after its output file was renamed into
place whole, so ``done`` always names a complete output.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cassette_denoise.batch.stats import BANDS_HZ

MANIFEST_NAME = "manifest.sqlite"
SCHEMA_VERSION = 2
STATUSES = ("queued", "running", "done", "failed")
FLOOR_COLUMNS = tuple(f"{band}_floor_{when}_db" for band in BANDS_HZ for when in ("before", "after"))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    input_path TEXT NOT NULL UNIQUE,
    output_path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_sha256 TEXT,
    settings_sha256 TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {STATUSES}),
    duration_s REAL,
    seconds REAL,
    error TEXT,
    worker TEXT,
    finished_utc TEXT,
    hum_hz REAL,
    whine_hz TEXT,
    clipped_samples INTEGER,
    peak_dbfs REAL,
    {", ".join(f"{column} REAL" for column in FLOOR_COLUMNS)},
    warnings TEXT NOT NULL DEFAULT '[]',
    thumbnail TEXT
);
"""
#: Everything a new queueing clears: the results of an earlier run of the row.
_RESULT_COLUMNS = ("content_sha256", "duration_s", "seconds", "error", "worker", "finished_utc", "hum_hz",
                   "whine_hz", "clipped_samples", "peak_dbfs", *FLOOR_COLUMNS, "thumbnail")


class ManifestError(Exception):
    """A manifest this version cannot use; the message names the file."""


@dataclass(frozen=True)
class Entry:
    """What to denoise: an input, its output and the identity of both the input and the settings."""

    input_path: str
    output_path: str
    size_bytes: int
    mtime_ns: int
    settings_sha256: str
    model_sha256: str
    settings_json: str


class Manifest:
    """Rows keyed by absolute input path; every write is its own committed transaction."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / MANIFEST_NAME
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._db:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if int(version) == 1:  # an archive's earlier runs stay: version 2 only adds the whine column
            with self._db:
                self._db.execute("ALTER TABLE files ADD COLUMN whine_hz TEXT")
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            version = SCHEMA_VERSION
        if int(version) != SCHEMA_VERSION:
            raise ManifestError(f"{self.path}: schema version {version}, this version reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, input_path: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM files WHERE input_path = ?", (input_path,)).fetchone()

    def queue(self, entry: Entry) -> int:
        """Insert or reset ``entry``'s row to ``queued`` with no results; returns the row id."""
        cleared = ", ".join(f"{column} = NULL" for column in _RESULT_COLUMNS)
        with self._db:
            self._db.execute(
                "INSERT INTO files (input_path, output_path, size_bytes, mtime_ns, settings_sha256, model_sha256, "
                "settings_json, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued') "
                "ON CONFLICT (input_path) DO UPDATE SET output_path = excluded.output_path, "
                "size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns, "
                "settings_sha256 = excluded.settings_sha256, model_sha256 = excluded.model_sha256, "
                f"settings_json = excluded.settings_json, status = 'queued', warnings = '[]', {cleared}",
                (entry.input_path, entry.output_path, entry.size_bytes, entry.mtime_ns, entry.settings_sha256,
                 entry.model_sha256, entry.settings_json),
            )
        return self.get(entry.input_path)["id"]

    def touch(self, input_path: str, *, size_bytes: int, mtime_ns: int) -> None:
        """Record a new size/mtime for an input whose content hash showed it unchanged."""
        with self._db:
            self._db.execute("UPDATE files SET size_bytes = ?, mtime_ns = ? WHERE input_path = ?",
                             (size_bytes, mtime_ns, input_path))

    def set_status(self, input_path: str, status: str) -> None:
        if status not in ("queued", "running"):
            raise ValueError(f"set_status takes queued or running (done/failed come with results), got {status!r}")
        with self._db:
            self._db.execute("UPDATE files SET status = ? WHERE input_path = ?", (status, input_path))

    def finish(self, input_path: str, *, status: str, warnings: list[str], **results) -> None:
        """Record a task's outcome: ``status`` done or failed, ``results`` named as the columns."""
        if status not in ("done", "failed"):
            raise ValueError(f"finish takes done or failed, got {status!r}")
        unknown = set(results) - set(_RESULT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown manifest columns {sorted(unknown)}")
        results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        assignments = ", ".join(f"{column} = ?" for column in results)
        with self._db:
            self._db.execute(
                f"UPDATE files SET status = ?, warnings = ?, {assignments} WHERE input_path = ?",
                (status, json.dumps(warnings), *results.values(), input_path),
            )

    def requeue_unfinished(self) -> int:
        """Put rows left ``running`` (by an interrupted or killed run) back to ``queued``; returns how many."""
        with self._db:
            return self._db.execute("UPDATE files SET status = 'queued' WHERE status = 'running'").rowcount

    def rows(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM files ORDER BY id").fetchall()

    def counts(self) -> dict[str, int]:
        found = dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        return {status: found.get(status, 0) for status in STATUSES}
