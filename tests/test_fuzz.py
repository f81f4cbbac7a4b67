"""Fuzz the Python API and the audio reader (tests/fuzz_targets.py) in a child process under a 3 GiB
address-space cap: any crash other than the documented errors, any non-finite output, a changed
input or a memory blow-up fails this test."""

import json
import resource
import subprocess
import sys
from pathlib import Path

MEMORY_CAP_BYTES = 3 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def test_api_and_reader_survive_1000_fuzzed_examples_under_a_memory_cap():
    targets = Path(__file__).with_name("fuzz_targets.py")
    result = subprocess.run([sys.executable, str(targets)], capture_output=True, text=True, timeout=300,
                            preexec_fn=_cap_memory, cwd=targets.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["api"] + counts["reader"] >= 1000, counts
    # Enough of them get through the checks to exercise the signal path and the decoders too.
    assert counts["api denoised"] >= 100 and counts["reader read"] >= 100, counts
