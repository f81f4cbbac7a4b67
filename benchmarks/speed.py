"""Real-time factor and peak memory of our models and the peer denoisers on long stereo files.

For each duration a stereo 44.1 kHz PCM_16 test file (synthetic music plus hiss) is generated once
into the cache folder; then every method runs on it in a fresh child process, one at a time:

* ``ours``: ``cassette-denoise denoise IN -o OUT`` with the bundled model (or ``--ours-model``);
* ``ours-float32``: the same with ``--precision float32`` (``ours`` takes bfloat16 where the CPU has it);
* ``seed-width`` and ``patch-2``: the same command with ``--model`` set to a network with random weights
  (speed does not depend on them): the seed project's layout at width 16, and the noise-aware shape whose
  finest level works on 2×2 blocks (``UNetConfig.patch``), 6 levels from width 12 growing 1.5× per level;
* the peers of :mod:`cassette_denoise.peers`, each applied to the whole file by a child Python
  process (read, denoise, write), since none of them streams.

Per run it records the processing time (reading, denoising and writing: what the command itself
reports, i.e. without interpreter start, imports and model loading), the child's whole wall time,
and its peak resident memory. Runs longer than ``--timeout-s`` or above ``--max-rss-mb`` are stopped
and recorded as skipped, with the reason.

    python benchmarks/speed.py                         # 10 s, 1 min, 10 min, 60 min; every method
    python benchmarks/speed.py --durations 10 --methods ours,seed-width
    python benchmarks/speed.py --durations 300 --methods ours,ours-float32,sox --repeats 5 --update
    python benchmarks/speed.py --load 2            # ours on 60 s: quiet vs 2 busy processes, 1 vs 2 threads

With ``--load N`` it compares conditions instead: each run alone and beside N CPU-bound busy processes
(one per core is what a busy laptop looks like), at each of ``--load-threads`` torch threads and each of
``--wait-policies``, all conditions alternated round by round for ``--repeats`` rounds, with medians and
the loaded/quiet ratios in ``results/speed_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import _common

DEFAULT_DURATIONS_S = (10, 60, 600, 3600)
RTF_TARGET = 0.05
LOAD_DURATION_S = 60
#: OpenMP wait policies --wait-policies can compare; an empty value is read as unset (libgomp warns once).
WAIT_POLICIES = {"passive": "PASSIVE", "active": "ACTIVE", "default": ""}
#: Shapes timed with random weights: key -> (label, UNetConfig fields).
RANDOM_SHAPES = {
    "seed-width": ("seed width (16)", {"base_width": 16}),
    "patch-2": ("patch 2, 6 levels from width 12", {"base_width": 12, "levels": 6, "width_growth": 1.5, "patch": 2,
                                                   "noise_floor_input": True}),
}
POLL_S = 0.2
# The denoise command's closing summary: "denoised 1 file(s), 0:10 of audio in 0.62 s, ...".
SUMMARY_SECONDS = re.compile(r"of audio in ([0-9.]+) s")


@dataclass(frozen=True)
class Method:
    key: str  # what --methods selects
    label: str  # what the results and tables show
    command: list[str] | None  # with "{input}" and "{output}" placeholders; None when it cannot run
    reason: str = ""  # why it cannot run
    reports_seconds: str = "cli"  # how the child reports its processing time: "cli" summary or "json" line
    model: dict | None = None


@dataclass(frozen=True)
class RunResult:
    seconds: float | None
    wall_s: float
    peak_rss_mb: float | None
    returncode: int | None
    note: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durations",
                        help="comma-separated test file lengths in seconds (default: "
                             f"{','.join(map(str, DEFAULT_DURATIONS_S))}; with --load {LOAD_DURATION_S})")
    parser.add_argument("--methods",
                        help="comma-separated: all, peers, ours, ours-float32, seed-width, patch-2, or peer names/"
                             "prefixes such as noisereduce, sox, ffmpeg (default: all; with --load ours)")
    parser.add_argument("--threads", type=int, default=2, help="torch/BLAS threads in each child (default: 2)")
    parser.add_argument("--ours-model", type=Path, help="checkpoint for 'ours' (default: the bundled model)")
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="stop a run after this long and record it as skipped (default: 900)")
    parser.add_argument("--max-rss-mb", type=float, default=None, help="stop a run whose processes together "
                        "exceed this resident memory (default: 85%% of physical memory)")
    parser.add_argument("--cache-dir", type=Path, default=_common.CACHE_DIR,
                        help="where test files, the random-weight models and outputs go (default: %(default)s)")
    parser.add_argument("--out", type=Path,
                        help="results file (default: results/speed.json; with --load results/speed_load.json)")
    parser.add_argument("--load", type=int, metavar="N", help="compare each run alone and beside N CPU-bound busy "
                        "processes (see above)")
    parser.add_argument("--load-threads", default="1,2",
                        help="with --load: comma-separated torch thread counts to compare, or auto for the "
                             "command's own choice (default: %(default)s)")
    parser.add_argument("--wait-policies", default="passive",
                        help="with --load: comma-separated OpenMP wait policies to compare: passive, active, or "
                             "default (OpenMP's own: spin a little, then sleep) (default: %(default)s)")
    parser.add_argument("--repeats", type=int,
                        help="rounds over all methods, each round starting one method later, with the medians in "
                             "'rows' and every run in 'runs' (default: 1); with --load, rounds over all conditions "
                             "(default: 3)")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows already in --out for other methods or durations and replace only "
                             "the ones measured now (each row records its command)")
    parser.add_argument("--run-peer", nargs=3, metavar=("KEY", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.run_peer:
        return run_peer(*args.run_peer)

    load_mode = args.load is not None
    durations = [float(item) for item in (args.durations or default_durations(load_mode)).split(",") if item.strip()]
    max_rss_mb = args.max_rss_mb or 0.85 * (_common.memory_total_mb() or 8192)
    methods = select_methods(all_methods(args), args.methods or ("ours" if load_mode else "all"))
    args.out = args.out or _common.RESULTS_DIR / ("speed_load.json" if load_mode else "speed.json")
    if load_mode:
        args.repeats = args.repeats or 3
        return compare_under_load(args, methods, durations, max_rss_mb=max_rss_mb)
    repeats = args.repeats or 1
    if repeats < 1:
        raise SystemExit(f"speed.py: error: need --repeats >= 1, got {repeats}")
    env = _common.thread_env(args.threads)
    document = {
        "benchmark": "speed",
        "command": _common.command_line(),
        "machine": _common.machine_info(threads=args.threads),
        "rtf_target": RTF_TARGET,
        "models": {method.key: method.model for method in methods if method.model},
        "notes": [
            "rtf = seconds / duration_s; seconds is the processing time the child reports (reading, denoising, "
            "writing), without interpreter start, imports and model loading; wall_s/wall_rtf include them.",
            "ours: seconds parsed from the denoise command's summary line, which has a resolution of 0.1 s.",
            "seed-width, patch-2: networks of those shapes with random weights; speed does not depend on training.",
            "peak_rss_mb: largest resident set of any one process of the run (getrusage of the child), in MiB.",
            "input: synthetic music with hiss, stereo 44.1 kHz PCM_16 WAV; outputs are written in the same format.",
            "With --repeats N the methods run in turn N times, each round starting one method later, so that a "
            "change in the machine's own load touches them all alike; 'runs' holds every run, 'rows' the medians "
            "(runs = how many).",
        ],
        "rows": [], "runs": [],
    }
    if args.update and args.out.exists():
        previous = json.loads(args.out.read_text())
        measured = {(method.key, duration) for method in methods for duration in durations}
        document["rows"] = [{"command": previous.get("command"), **row} for row in previous.get("rows", [])
                            if (row["method"], row["duration_s"]) not in measured]
        document["runs"] = [row for row in previous.get("runs", [])
                            if (row["method"], row["duration_s"]) not in measured]
        document["models"] = {**previous.get("models", {}), **document["models"]}
    print(f"writing {args.out}", file=sys.stderr)
    for duration in durations:
        started = time.perf_counter()
        source = _common.input_file(duration, folder=args.cache_dir)
        print(f"input {source} ({duration:g} s) ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        runs = []
        for repeat in range(repeats):
            shift = repeat % len(methods)
            for method in methods[shift:] + methods[:shift]:
                row = {**measure(method, source, duration, args=args, env=env, max_rss_mb=max_rss_mb),
                       "command": document["command"], "round": repeat}
                runs.append(row)
                document["runs"].append(row)
                _common.write_json(args.out, document)  # after every run, so an interrupted benchmark keeps its runs
                rtf = "-" if row["rtf"] is None else f"{row['rtf']:.4f}"
                rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f} MB"
                print(f"{duration:>6g} s  {method.label:<30} rtf {rtf:>8}  wall {row['wall_s']:7.2f} s  peak {rss:>8}  "
                      f"{row['note']}", file=sys.stderr)
        document["rows"] += [median_row([row for row in runs if row["method"] == method.key]) for method in methods]
        _common.write_json(args.out, document)
    document["machine"]["load_average_at_end"] = list(os.getloadavg())
    _common.write_json(args.out, document)
    return 0


MEDIAN_FIELDS = ("seconds", "rtf", "wall_s", "wall_rtf", "peak_rss_mb", "load_average")


def median_row(runs: list[dict]) -> dict:
    """One row for the runs of one method on one file: the median of each measured field (None where no run
    gave one), the notes that any run had, and how many runs there were."""
    row = {key: value for key, value in runs[0].items() if key not in (*MEDIAN_FIELDS, "round", "note")}
    for field in MEDIAN_FIELDS:
        values = [run[field] for run in runs if run[field] is not None]
        row[field] = statistics.median(values) if values else None
    row["note"] = "; ".join(dict.fromkeys(run["note"] for run in runs if run["note"]))
    row["runs"] = len(runs)
    return row


def default_durations(load_mode: bool) -> str:
    return str(LOAD_DURATION_S) if load_mode else ",".join(map(str, DEFAULT_DURATIONS_S))


def compare_under_load(args: argparse.Namespace, methods: list[Method], durations: list[float], *,
                       max_rss_mb: float) -> int:
    """Every condition (load, threads, wait policy) in turn, round after round; rows, medians and ratios."""
    # "auto": OMP_NUM_THREADS unset, so the command picks its own count (threads.default_threads).
    thread_counts = [item.strip() if item.strip() == "auto" else int(item) for item in args.load_threads.split(",")
                     if item.strip()]
    policies = [item.strip() for item in args.wait_policies.split(",") if item.strip()]
    unknown = [policy for policy in policies if policy not in WAIT_POLICIES]
    counts = [count for count in thread_counts if count != "auto"]
    if args.load < 1 or args.repeats < 1 or not thread_counts or (counts and min(counts) < 1) or unknown:
        raise SystemExit(f"speed.py: error: need --load >= 1, --repeats >= 1, thread counts >= 1 and wait policies "
                         f"among {', '.join(WAIT_POLICIES)}; got {args.load}, {args.repeats}, {thread_counts}, {policies}")
    conditions = [(load, threads, policy) for load in (0, args.load) for threads in thread_counts for policy in policies]
    document = {
        "benchmark": "speed_load",
        "command": _common.command_line(),
        "machine": _common.machine_info(threads=counts[0] if counts else None),
        "models": {method.key: method.model for method in methods if method.model},
        "notes": [
            "load: CPU-bound busy processes (a pure-Python loop each) running during the whole run, 0 = quiet.",
            "wait_policy: OMP_WAIT_POLICY in the child (the command line sets passive itself when it is unset).",
            "Conditions alternate within each round, starting one later each round, so that a change in the "
            "machine's own load touches them all alike; medians over rounds.",
            "seconds: the processing time the child reports; wall_s: its whole life, start-up included.",
        ],
        "rows": [], "summary": [],
    }
    print(f"writing {args.out}", file=sys.stderr)
    for duration in durations:
        source = _common.input_file(duration, folder=args.cache_dir)
        for repeat in range(args.repeats):
            shift = repeat % len(conditions)
            for load, threads, policy in conditions[shift:] + conditions[:shift]:
                env = {**_common.thread_env(None if threads == "auto" else threads),
                       "OMP_WAIT_POLICY": WAIT_POLICIES[policy]}
                for method in methods:
                    with _common.busy_processes(load, limit_s=args.timeout_s + 60):
                        row = measure(method, source, duration, args=args, env=env, max_rss_mb=max_rss_mb)
                    row.update(load=load, threads=threads, wait_policy=policy, round=repeat)
                    document["rows"].append(row)
                    document["summary"] = load_summary(document["rows"])
                    _common.write_json(args.out, document)
                    wall = "-" if row["wall_s"] is None else f"{row['wall_s']:.2f} s"
                    print(f"{duration:>6g} s  {method.label:<12} load {load} threads {threads} {policy:<8} "
                          f"seconds {row['seconds']}  wall {wall}  {row['note']}", file=sys.stderr)
    document["machine"]["load_average_at_end"] = list(os.getloadavg())
    _common.write_json(args.out, document)
    return 0


def load_summary(rows: list[dict]) -> list[dict]:
    """Medians per (method, duration, load, threads, wait policy), with the loaded/quiet ratio of each."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["method"], row["duration_s"], row["load"], row["threads"], row["wait_policy"])
        groups.setdefault(key, []).append(row)

    def median(group, field):
        values = [row[field] for row in group if row[field] is not None]
        return statistics.median(values) if values else None

    summary = []
    for key, group in groups.items():
        item = dict(zip(("method", "duration_s", "load", "threads", "wait_policy"), key))
        item.update(runs=len(group), median_seconds=median(group, "seconds"), median_wall_s=median(group, "wall_s"))
        summary.append(item)
    quiet = {(item["method"], item["duration_s"], item["threads"], item["wait_policy"]): item
             for item in summary if item["load"] == 0}
    for item in summary:
        base = quiet.get((item["method"], item["duration_s"], item["threads"], item["wait_policy"]))
        for field in ("seconds", "wall_s"):
            ours, theirs = item[f"median_{field}"], base and base[f"median_{field}"]
            item[f"{field}_vs_quiet"] = ours / theirs if ours is not None and theirs else None
    return summary


def all_methods(args: argparse.Namespace) -> list[Method]:
    """Every method this script knows, in table order; those that cannot run carry the reason."""
    from cassette_denoise.peers import all_peers

    cli = [str(Path(sys.executable).with_name("cassette-denoise"))]
    if not Path(cli[0]).is_file():
        cli = [sys.executable, "-m", "cassette_denoise"]
    denoise = [*cli, "denoise", "{input}", "-o", "{output}", "--overwrite", "--device", "cpu"]

    methods = []
    ours_path = args.ours_model or _bundled_weights()
    if ours_path is None:
        methods.append(Method("ours", "ours", None, "the bundled weights are missing; pass --ours-model PATH"))
    else:
        extra = ["--model", str(ours_path)] if args.ours_model else []
        source = str(ours_path) if args.ours_model else f"bundled ({ours_path.name})"
        methods.append(Method("ours", "ours", denoise + extra, model=_describe(ours_path, source)))
        methods.append(Method("ours-float32", "ours, float32", denoise + extra + ["--precision", "float32"],
                              model=_describe(ours_path, source)))
    for key, (label, shape) in RANDOM_SHAPES.items():
        path = _common.random_checkpoint(args.cache_dir / f"random-{key}.safetensors", **shape)
        methods.append(Method(key, label, denoise + ["--model", str(path)], model=_describe(path, "random weights")))

    for peer in all_peers():
        key = peer_key(peer.name)
        if not peer.available():
            methods.append(Method(key, peer.name, None, f"needs {peer.requirement}"))
            continue
        command = [sys.executable, str(Path(__file__).resolve()), "--run-peer", key, "{input}", "{output}"]
        methods.append(Method(key, peer.name, command, reports_seconds="json"))
    return methods


def select_methods(methods: list[Method], spec: str) -> list[Method]:
    """Methods named by ``spec``: ``all``, ``peers``, keys, or key prefixes (``noisereduce`` picks both modes)."""
    tokens = [token.strip().lower() for token in spec.split(",") if token.strip()]
    chosen = []
    for token in tokens:
        if token == "all":
            matches = methods
        elif token == "peers":
            matches = [method for method in methods if method.key not in ("ours", "ours-float32", *RANDOM_SHAPES)]
        elif any(method.key == token for method in methods):
            matches = [method for method in methods if method.key == token]
        else:
            matches = [method for method in methods if method.key.startswith(token + "-")]
        if not matches:
            keys = ", ".join(method.key for method in methods)
            raise SystemExit(f"speed.py: error: unknown method {token!r}; choose from all, peers, {keys}")
        chosen += [method for method in matches if method not in chosen]
    return [method for method in methods if method in chosen]  # always in table order


def peer_key(name: str) -> str:
    """``"noisereduce (non-stationary)"`` -> ``"noisereduce-non-stationary"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def measure(method: Method, source: Path, duration_s: float, *, args, env, max_rss_mb: float) -> dict:
    row = {"method": method.key, "label": method.label, "duration_s": duration_s, "seconds": None, "rtf": None,
           "wall_s": None, "wall_rtf": None, "peak_rss_mb": None, "load_average": os.getloadavg()[0], "note": ""}
    if method.command is None:
        row["note"] = f"skipped: {method.reason}"
        return row
    out_dir = args.cache_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{method.key}-{source.name}"
    output.unlink(missing_ok=True)
    command = [part.format(input=source, output=output) for part in method.command]
    result = run_measured(command, env=env, timeout_s=args.timeout_s, max_rss_mb=max_rss_mb,
                          reports_seconds=method.reports_seconds)
    row.update(wall_s=result.wall_s, wall_rtf=result.wall_s / duration_s, peak_rss_mb=result.peak_rss_mb,
               note=result.note)
    if result.returncode == 0 and result.seconds is not None:
        row.update(seconds=result.seconds, rtf=result.seconds / duration_s)
        problem = _check_output(source, output)
        if problem:
            row["note"] = (row["note"] + "; " if row["note"] else "") + problem
    output.unlink(missing_ok=True)
    return row


def run_measured(command: list[str], *, env, timeout_s: float, max_rss_mb: float, reports_seconds: str) -> RunResult:
    """Run ``command`` alone (``start_new_session``), watching time and memory; reap it with ``wait4`` for its rusage."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               start_new_session=True, text=True)
    # Drain the pipes in the background so a chatty child never blocks on a full pipe.
    captured = {"stdout": "", "stderr": ""}

    def drain(name):
        captured[name] = getattr(process, name).read()

    readers = [threading.Thread(target=drain, args=(name,), daemon=True) for name in captured]
    for reader in readers:
        reader.start()

    stop_reason = ""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.perf_counter() - started
        if elapsed > timeout_s:
            stop_reason = f"skipped: stopped after the {timeout_s:g} s timeout"
        else:
            tree_mb = _common.process_tree_rss_mb(process.pid)
            if tree_mb > max_rss_mb:
                stop_reason = f"skipped: stopped at {tree_mb:.0f} MB resident, above the {max_rss_mb:.0f} MB limit"
        if stop_reason:
            os.killpg(process.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(POLL_S)
    wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for reader in readers:
        reader.join(timeout=5)
    peak_rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux

    if stop_reason:
        return RunResult(None, wall_s, None, None, stop_reason)
    if process.returncode != 0:
        lines = (captured["stderr"].strip() or captured["stdout"].strip() or f"exit code {process.returncode}")
        return RunResult(None, wall_s, peak_rss_mb, process.returncode, f"failed: {lines.splitlines()[-1][:300]}")
    seconds = _reported_seconds(captured, reports_seconds)
    note = "" if seconds is not None else "no processing time reported"
    return RunResult(seconds, wall_s, peak_rss_mb, 0, note)


def run_peer(key: str, source: str, destination: str) -> int:
    """Child process: one peer over a whole file; prints ``{"seconds": ...}`` (read + denoise + write)."""
    from cassette_denoise.audio import probe, read_audio, write_audio
    from cassette_denoise.peers import all_peers

    peers = {peer_key(peer.name): peer for peer in all_peers()}
    peer = peers[key]
    # Peers import their libraries on first use; a warm-up on one second of quiet noise keeps that
    # out of the timing, as the denoise command's timing leaves out imports and model loading.
    import numpy as np

    peer.denoise(np.random.default_rng(0).normal(0, 1e-3, (2, 44_100)).astype(np.float32), 44_100)
    started = time.perf_counter()
    subtype = probe(source).subtype
    audio, sample_rate = read_audio(source)
    out = peer.denoise(audio, sample_rate)
    # Same format as the denoise command writes (the input's subtype), so the write costs the same.
    write_audio(destination, _clip_for(out, subtype), sample_rate, subtype=subtype)
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


def _clip_for(audio, subtype: str):
    import numpy as np

    return audio if subtype.upper() in ("FLOAT", "DOUBLE") else np.clip(audio, -1.0, 1.0)


def _reported_seconds(captured: dict, how: str) -> float | None:
    if how == "json":
        for line in reversed(captured["stdout"].strip().splitlines()):
            try:
                return float(json.loads(line)["seconds"])
            except (ValueError, KeyError, TypeError):
                continue
        return None
    found = SUMMARY_SECONDS.findall(captured["stderr"])
    return float(found[-1]) if found else None


def _check_output(source: Path, output: Path) -> str:
    from cassette_denoise.audio import AudioError, probe

    try:
        made, given = probe(output), probe(source)
    except AudioError as error:
        return f"bad output: {error}"
    if (made.frames, made.channels, made.sample_rate) != (given.frames, given.channels, given.sample_rate):
        return (f"output is {made.frames} frames x {made.channels} ch at {made.sample_rate} Hz, "
                f"input {given.frames} x {given.channels} at {given.sample_rate}")
    return ""


def _bundled_weights() -> Path | None:
    from importlib import resources

    from cassette_denoise.denoiser import BUNDLED_MODEL

    path = resources.files("cassette_denoise") / "weights" / f"{BUNDLED_MODEL}.safetensors"
    return Path(str(path)) if path.is_file() else None


def _describe(path: Path, source: str) -> dict:
    sidecar = Path(path).with_suffix(".json")
    try:
        metadata = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        metadata = {}
    return {"path": str(path), "source": source, "config": metadata.get("config"),
            "training_data": metadata.get("training_data")}


if __name__ == "__main__":
    sys.exit(main())
