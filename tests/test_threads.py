"""Thread settings: a default that never oversubscribes, the user's choices kept, bad values refused."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from cassette_denoise import threads
from cassette_denoise.cli import main

from test_cli_denoise import write


@pytest.fixture()
def torch_threads():
    """Restore torch's thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def fake_topology(root, cores_of_cpus):
    for cpu, core in cores_of_cpus.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text("0\n")
        (folder / "core_id").write_text(f"{core}\n")


def test_available_cores_lie_within_the_affinity():
    assert 1 <= threads.available_cores() <= len(os.sched_getaffinity(0))


def test_hyperthreads_of_one_core_count_once(tmp_path, monkeypatch):
    affinity = sorted(os.sched_getaffinity(0))
    fake_topology(tmp_path, {cpu: 0 for cpu in affinity})  # every CPU a sibling on core 0
    monkeypatch.setattr(threads, "_CPU_TOPOLOGY", tmp_path)
    assert threads.available_cores() == 1
    fake_topology(tmp_path / "own", {cpu: cpu for cpu in affinity})
    monkeypatch.setattr(threads, "_CPU_TOPOLOGY", tmp_path / "own")
    assert threads.available_cores() == len(affinity)


def test_default_is_capped_and_honours_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 64)
    assert threads.default_threads() == threads.MAX_DEFAULT_THREADS
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "12")
    assert threads.default_threads() == 12
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored, as torch does
    assert threads.default_threads() == 3


def test_the_default_leaves_out_the_cores_other_programs_keep_busy(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert [threads.default_threads(busy_cores=busy) for busy in (0.0, 0.4, 0.6, 2.0, 3.7, 9.0)] == [4, 4, 3, 2, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.default_threads(busy_cores=3.0) == 4  # the user's choice stands


def test_busy_cores_are_what_the_cpus_did_less_their_idle_time_and_this_process():
    cpus = len(os.sched_getaffinity(0))
    before = threads.CpuSample(wall_s=100.0, idle_s=50.0, own_s=3.0)
    after = threads.CpuSample(wall_s=101.0, idle_s=50.0 + cpus - 1.5, own_s=3.5)  # 1.5 CPUs worked, 0.5 for us
    assert threads.busy_cores_elsewhere(before, after) == pytest.approx(1.0)
    assert threads.busy_cores_elsewhere(before, threads.CpuSample(100.05, 50.1, 3.0)) == 0.0  # too short to tell
    assert threads.busy_cores_elsewhere(None, after) == 0.0


def test_beside_a_busy_program_on_every_core_the_command_takes_one_thread():
    cpus = len(os.sched_getaffinity(0))
    spin = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cpus)]
    try:
        code = "from cassette_denoise import threads; print(threads.configure_threads())"
        env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert done.stdout.split() == ["1"]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_configure_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        threads.configure_threads(bad)


def test_configure_threads_sets_torch(torch_threads):
    assert threads.configure_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert threads.configure_threads() == threads.default_threads() == torch.get_num_threads()


def test_passive_waiting_is_set_only_before_torch_and_only_if_unset(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert not threads.use_passive_waiting()  # torch is loaded in this process: too late to matter
    assert "OMP_WAIT_POLICY" not in os.environ
    code = ("import os, sys; from cassette_denoise import threads; first = threads.use_passive_waiting(); "
            "print(first, threads.use_passive_waiting(), os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["True", "False", "PASSIVE", "False"]


def test_denoise_threads_option_applies_before_the_model_runs(tmp_path, tiny_checkpoint, torch_threads):
    source = write(tmp_path / "in.wav")
    outputs = []
    for count in (1, 2):
        outputs.append(tmp_path / f"out{count}.wav")
        assert main(["denoise", str(source), "-o", str(outputs[-1]), "--model", str(tiny_checkpoint),
                     "--device", "cpu", "--threads", str(count)]) == 0
        assert torch.get_num_threads() == count
    # Sums split across threads round differently: at most one step of 16-bit audio apart.
    one, two = (sf.read(path, dtype="int16")[0].astype(int) for path in outputs)
    assert one.shape == two.shape and np.abs(one - two).max() <= 1


def test_the_command_line_runs_openmp_with_passive_waiting(tmp_path, tiny_checkpoint):
    # OpenMP prints the settings it read when it loads (OMP_DISPLAY_ENV): the policy must be in place by then.
    # Passive waiting shows as no spinning at all (left unset, OpenMP spins 300000 times before it sleeps).
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    command = [sys.executable, "-m", "cassette_denoise", "denoise", str(write(tmp_path / "in.wav", 0.5)),
               "-o", str(tmp_path / "out.wav"), "--model", str(tiny_checkpoint), "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env={**env, "OMP_DISPLAY_ENV": "VERBOSE"}, timeout=120)
    assert done.returncode == 0, done.stderr
    if "OMP_WAIT_POLICY =" not in done.stderr:
        pytest.skip("this torch's OpenMP runtime does not print its settings (not GNU libgomp)")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in done.stderr and "GOMP_SPINCOUNT = '0'" in done.stderr
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**env, "OMP_DISPLAY_ENV": "TRUE", "OMP_WAIT_POLICY": "ACTIVE"})
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in done.stderr


def test_malloc_arenas_are_limited_on_glibc_and_left_alone_elsewhere(monkeypatch):
    import platform

    assert threads.limit_malloc_arenas(4) is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert threads.limit_malloc_arenas(4) is False
