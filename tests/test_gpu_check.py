"""`make gpu-check` on a machine without a CUDA GPU: one line, exit status 0, and docs/gpu.md left as it is; and the
figures it computes on a GPU: the model FLOPs of a training example, and the peak it divides them by."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

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


def gpu_check_module():
    """scripts/gpu_check.py as a module (scripts/ is not a package); importing it measures nothing."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
        sys.modules["gpu_check"] = module = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def test_the_model_flops_of_a_training_example_are_counted_by_hand():
    """A BART of d_model 16, feed-forward 40, 2 encoder and 1 decoder layers, 50 tokens: an encoder layer's linear
    weights are q, k, v, out (4 d^2) and fc1, fc2 (2 d f), seen by the source tokens; a decoder layer's, its
    self-attention's and cross-attention's 8 d^2 and 2 d f, and the LM head's V d, by the target tokens."""
    from transformers import BartConfig, BartForConditionalGeneration

    d, f, vocab, source, target = 16, 40, 50, 7, 3
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=vocab, d_model=d, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=f, decoder_ffn_dim=f, max_position_embeddings=16))
    by_hand = 6 * (2 * (4 * d * d + 2 * d * f) * source + (1 * (8 * d * d + 2 * d * f) + vocab * d) * target)
    assert gpu_check_module().training_flops_per_example(model, source, target) == by_hand == 267_840


@pytest.mark.parametrize("name, peak, part", [
    ("NVIDIA H100 80GB HBM3", 989e12, "H100 SXM, assumed from the name"),
    ("NVIDIA H100 PCIe", 756e12, "H100 PCIe"),
    ("NVIDIA H100 NVL", 835e12, "H100 NVL"),
    ("NVIDIA H200", 989e12, "H200 SXM, assumed from the name"),
    ("NVIDIA H200 NVL", 835e12, "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", 312e12, "A100"),
    ("Tesla T4", None, None)])
def test_the_peak_is_the_part_the_device_names(name, peak, part):
    assert gpu_check_module().peak_bf16_flops(name) == (peak, part)
