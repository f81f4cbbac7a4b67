"""The per-tape report: warnings from a task's measurements, and the CSV and HTML pages made from the manifest.

Rows are sorted so that the tapes that need a human ear come first: failures, then the most warnings, then the
highest hiss floor left after denoising.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import sqlite3
from pathlib import Path

from cassette_denoise.batch.manifest import FLOOR_COLUMNS, STATUSES

REPORT_FOLDER = "report"
#: Less hiss-floor reduction than this (dB) suggests a tape the model hardly changed: very clean, or noise it
#: does not recognise.
LITTLE_REDUCTION_DB = 3.0
#: More than this suggests the treble may sound dull: worth a listen (the real excerpt in docs/batch.md: 15 dB;
#: the heavily hissing examples/cassette-example.flac: 28 dB).
LARGE_REDUCTION_DB = 30.0
#: A hiss floor still above this after denoising (dB re full scale per bin) leaves hiss to hear on quiet
#: passages. The real excerpt in docs/batch.md: -85 dB before, -101 dB after, -102 dB for its clean reference.
RESIDUAL_HISS_DB = -90.0

CSV_COLUMNS = ("input_path", "output_path", "status", "warnings", "error", "duration_s", "seconds", "hum_hz",
               "whine_hz", "clipped_samples", "peak_dbfs", *FLOOR_COLUMNS, "worker", "finished_utc")


def warnings_for(*, clipped_samples: int, hum_hz: float | None, floors_before_db: dict,
                 floors_after_db: dict, whine_hz: tuple[float, ...] = ()) -> list[str]:
    """The reasons to listen to a denoised tape, as short sentences."""
    found = []
    if clipped_samples:
        found.append(f"{clipped_samples} samples clipped")
    if hum_hz is not None:
        found.append(f"{hum_hz:g} Hz hum removed")
    if whine_hz:
        found.append(f"whine removed at {', '.join(f'{frequency:.0f}' for frequency in sorted(whine_hz))} Hz")
    before, after = floors_before_db.get("hiss"), floors_after_db.get("hiss")
    if before is not None and after is not None:
        reduction = before - after
        if reduction < LITTLE_REDUCTION_DB:
            found.append(f"hiss floor lowered by only {reduction:.1f} dB")
        elif reduction > LARGE_REDUCTION_DB:
            found.append(f"hiss floor lowered by {reduction:.0f} dB: check the treble")
        if after > RESIDUAL_HISS_DB:
            found.append(f"hiss floor still {after:.0f} dB")
    return found


def listen_order(row: sqlite3.Row) -> tuple:
    """Sort key: failed first, then more warnings, then a higher hiss floor left, then by path."""
    hiss_after = row["hiss_floor_after_db"]
    return (row["status"] != "failed", -len(json.loads(row["warnings"])),
            -(hiss_after if hiss_after is not None else -math.inf), row["input_path"])


def write_report(rows: list[sqlite3.Row], folder: str | Path) -> tuple[Path, Path]:
    """Write ``report.csv`` and ``index.html`` into ``folder``/report (each renamed into place whole).

    Returns:
        ``(csv_path, html_path)``.
    """
    target = Path(folder) / REPORT_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=listen_order)
    csv_path, html_path = target / "report.csv", target / "index.html"
    with _replacing(csv_path) as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in ordered:
            writer.writerow([_csv_value(row, column) for column in CSV_COLUMNS])
    with _replacing(html_path) as handle:
        handle.write(_html(ordered, target))
    return csv_path, html_path


def _csv_value(row: sqlite3.Row, column: str) -> str:
    value = row[column]
    if column == "warnings":
        return "; ".join(json.loads(value))
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


_STYLE = ("body{font:13px sans-serif;margin:1em}table{border-collapse:collapse}td,th{border-bottom:1px solid #ccc;"
          "padding:3px 6px;text-align:left;vertical-align:middle;white-space:nowrap}td:nth-child(3){white-space:normal}"
          ".failed{background:#fdd}.warn{background:#ffd}")


def _html(rows: list[sqlite3.Row], folder: Path) -> str:
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    lines = [
        "<!doctype html><meta charset='utf-8'><title>cassette-denoise batch report</title>",
        f"<style>{_STYLE}</style><h1>Batch report</h1>",
        "<p>" + ", ".join(f"{count} {status}" for status, count in counts.items() if count) + ". Tapes that need a "
        "listen come first. Floors: each bin's level in its quietest tenth of the time, averaged over the band, "
        "dB re full scale per bin, before → after. Thumbnails: before | after, log frequency up to the Nyquist "
        "frequency.</p>",
        "<table><tr><th>tape</th><th>status</th><th>warnings / error</th><th>duration</th><th>hum</th>"
        "<th>whine</th><th>clipped</th><th>rumble floor</th><th>mid floor</th><th>hiss floor</th><th>spectrogram</th></tr>",
    ]
    for row in rows:
        notes = json.loads(row["warnings"]) + ([row["error"]] if row["error"] else [])
        kind = "failed" if row["status"] == "failed" else "warn" if notes else ""
        floors = [_floor(row, band) for band in ("rumble", "mid", "hiss")]
        image = ""
        if row["thumbnail"]:
            source = os.path.relpath(row["thumbnail"], folder)
            image = f"<img src='{html.escape(Path(source).as_posix())}' alt='spectrogram' height='60'>"
        cells = [html.escape(row["input_path"]), row["status"], html.escape("; ".join(notes)),
                 _minutes(row["duration_s"]), f"{row['hum_hz']:g} Hz" if row["hum_hz"] else "",
                 f"{row['whine_hz']} Hz" if row["whine_hz"] else "",
                 str(row["clipped_samples"] or ""), *floors, image]
        lines.append(f"<tr class='{kind}'>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines) + "\n"


def _floor(row: sqlite3.Row, band: str) -> str:
    before, after = row[f"{band}_floor_before_db"], row[f"{band}_floor_after_db"]
    return "" if before is None or after is None else f"{before:.0f} → {after:.0f}"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


class _replacing:
    """Open a text file's hidden sibling for writing and rename it over the file on success."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.partial")

    def __enter__(self):
        self.handle = open(self.partial, "w", newline="", encoding="utf-8")
        return self.handle

    def __exit__(self, exc_type, *exc) -> None:
        self.handle.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)
