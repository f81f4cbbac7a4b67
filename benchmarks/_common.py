"""What the benchmark scripts share: paths, the machine description, result files and test audio.

Not part of the package: these scripts measure it. Results are JSON documents that carry the exact
command that made them, so that ``tables.py`` can print it above each table.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
#: The project's shared folder sits next to the repository (``../shared`` from its root).
SHARED_DIR = REPO_DIR.parent / "shared"
#: Large generated inputs and throw-away outputs live outside the repository.
CACHE_DIR = Path(os.environ.get("CASSETTE_BENCH_CACHE", "/tmp/cassette-bench"))

SAMPLE_RATE = 44_100
#: Bump when :func:`synthetic_music_blocks` changes, so that cached files are regenerated.
GENERATOR_VERSION = 1


def command_line() -> str:
    """The command that is running, as someone would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_DIR)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment that caps torch (OpenMP) and the BLAS libraries at ``threads`` threads; None leaves each
    library (and the command line) to choose its own."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        if threads is None:
            env.pop(name, None)
        else:
            env[name] = str(threads)
    return env


#: One busy process: a pure-Python loop that keeps one core at 100 % until its deadline (argv[1] seconds), so
#: that even a benchmark killed without cleaning up leaves nothing running for long.
_BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def busy_processes(count: int, *, limit_s: float) -> Iterator[list[subprocess.Popen]]:
    """``count`` CPU-bound processes running for the ``with`` block (at most ``limit_s``), then killed:
    the other programs of a busy machine."""
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(limit_s)],
                                              stdin=subprocess.DEVNULL, start_new_session=True))
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def machine_info(*, threads: int | None) -> dict:
    """CPU, cores, memory and software versions; torch's thread count is read in a child with ``threads`` set."""
    import torch

    import cassette_denoise

    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True, text=True, env=thread_env(threads),
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": memory_total_mb(),
        "threads_requested": threads,
        "torch_threads": int(probe.stdout.strip()) if probe.returncode == 0 else None,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cassette_denoise": cassette_denoise.__version__,
        "git_commit": _git_commit(),
    }


def write_json(path: Path, document: dict) -> None:
    """Write ``document`` atomically, so that a benchmark killed mid-way leaves the last complete version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    temp.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")
    os.replace(temp, path)


def process_tree_rss_mb(session_id: int) -> float:
    """Resident memory of every process whose sid is ``session_id`` (the child and anything it
    started), in MiB."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the parenthesised command name: state ppid pgrp sid ...
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) != session_id:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return total_kb / 1024


def random_checkpoint(path: Path, *, seed: int = 0, **shape) -> Path:
    """A model of the given shape (``UNetConfig`` fields) with random weights (enough to time it: speed does not
    depend on training)."""
    import torch

    from cassette_denoise.checkpoint import save_model
    from cassette_denoise.model import UNet, UNetConfig

    path = Path(path).with_suffix(".safetensors")
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # UNet's initialisers draw from torch's global generator
    model = UNet(UNetConfig(**shape))
    return save_model(path, model, metadata={
        "training_data": "none: random weights, made by benchmarks/ for speed and memory measurements only",
    })


def synthetic_music_blocks(
    duration_s: float, *, seed: int, sample_rate: int = SAMPLE_RATE, block_s: float = 10.0,
    hiss_dbfs: float = -50.0,
) -> Iterator[np.ndarray]:
    """Music-like stereo test audio with tape-like hiss, as float32 ``(2, samples)`` blocks.

    Overlapping plucked notes (a harmonic wavetable with attack and exponential decay) from a
    pentatonic scale, panned across the stereo field, plus white hiss tilted towards the highs at
    ``hiss_dbfs`` RMS. Notes are drawn once for the whole duration and rendered block by block, so
    the audio is continuous across blocks and the generator holds only one block (≈ 7 MB at 10 s).
    """
    rng = np.random.default_rng([seed, 0])
    total = int(round(duration_s * sample_rate))
    step_s = 0.2
    count = max(1, int(duration_s / step_s))
    onsets = (np.arange(count) * step_s + rng.uniform(0, step_s, count)) * sample_rate
    lengths = rng.uniform(0.3, 1.5, count) * sample_rate
    pentatonic = np.array([0, 2, 4, 7, 9])
    midi = 48 + 12 * rng.integers(0, 3, count) + pentatonic[rng.integers(0, 5, count)]
    frequencies = 440.0 * 2 ** ((midi - 69) / 12)
    amplitudes = rng.uniform(0.1, 0.3, count)
    pans = rng.uniform(0.15, 0.85, count) * np.pi / 2
    timbres = rng.integers(0, 3, count)
    tables = _wavetables()
    ends = onsets + lengths
    block = int(block_s * sample_rate)
    hiss_rms = 10 ** (hiss_dbfs / 20)

    for number, start in enumerate(range(0, total, block)):
        stop = min(total, start + block)
        out = np.zeros((2, stop - start))
        # Notes sounding in [start, stop): onsets are sorted, and no note is longer than 1.5 s.
        first = np.searchsorted(onsets, start - 1.5 * sample_rate)
        last = np.searchsorted(onsets, stop)
        for note in range(first, last):
            if ends[note] <= start:
                continue
            lo, hi = max(start, int(np.ceil(onsets[note]))), min(stop, int(ends[note]))
            if hi <= lo:
                continue
            age = (np.arange(lo, hi) - onsets[note]) / sample_rate
            remaining = (ends[note] - np.arange(lo, hi)) / sample_rate
            # 5 ms attack, decay to -26 dB over the note, 20 ms release so notes never end in a click.
            envelope = np.minimum(1.0, age / 0.005) * np.exp(-3.0 * age / (lengths[note] / sample_rate))
            envelope *= np.minimum(1.0, remaining / 0.02)
            phase = (frequencies[note] * age) % 1.0
            table = tables[timbres[note]]
            voice = amplitudes[note] * envelope * table[(phase * table.size).astype(np.int64)]
            out[0, lo - start: hi - start] += np.cos(pans[note]) * voice
            out[1, lo - start: hi - start] += np.sin(pans[note]) * voice
        noise = np.random.default_rng([seed, 1, number]).standard_normal(out.shape)
        # First difference tilts the white noise upwards, like hiss through a playback EQ.
        tilted = noise + 0.8 * np.diff(noise, axis=1, prepend=0.0)
        out += tilted * (hiss_rms / np.sqrt(1 + 2 * 0.8**2 + 2 * 0.8))
        yield np.clip(out, -1.0, 1.0).astype(np.float32)


def input_file(duration_s: float, *, seed: int = 0, folder: Path = CACHE_DIR) -> Path:
    """A cached stereo 44.1 kHz PCM_16 WAV of :func:`synthetic_music_blocks`, written block by block."""
    from cassette_denoise.audio import AtomicAudioWriter, probe

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"music-hiss-{duration_s:g}s-seed{seed}-v{GENERATOR_VERSION}.wav"
    frames = int(round(duration_s * SAMPLE_RATE))
    if path.is_file() and probe(path).frames == frames:
        return path
    with AtomicAudioWriter(path, sample_rate=SAMPLE_RATE, channels=2, subtype="PCM_16") as writer:
        for block in synthetic_music_blocks(duration_s, seed=seed):
            writer.write(block)
    return path


def _wavetables(size: int = 4096) -> list[np.ndarray]:
    """One period each of three timbres (dull, medium, bright), peak-normalised."""
    phase = np.arange(size) / size
    tables = []
    for rolloff in (2.0, 1.3, 0.9):
        wave = sum(np.sin(2 * np.pi * k * phase) / k**rolloff for k in range(1, 13))
        tables.append(wave / np.abs(wave).max())
    return tables


def _git_commit() -> str | None:
    # Read-only: just reports which commit was measured.
    try:
        done = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        # --no-optional-locks: status must not even refresh the index.
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    return repr(value)
