"""`make gpu-check` on a machine without a CUDA GPU: one line, exit status 0, and docs/gpu.md left as it is."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing():
    page = REPO / "docs" / "gpu.md"
    before = page.read_bytes()
    # CUDA_VISIBLE_DEVICES="" hides any GPU this machine might have
    result = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore"), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing measured"]
    assert page.read_bytes() == before
