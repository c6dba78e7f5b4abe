"""`--strategy dp` under mixed precision: every DataParallel replica autocasts to the dtype the run asked for.

torch's `parallel_apply` runs each replica in a thread of its own and re-enters autocast there passing only
`enabled=`; a fresh thread's autocast dtype is its device's default (float16 on CUDA, bfloat16 on the CPU), not the
caller's. `parallel_apply` itself needs an accelerator, so `in_replica_thread` does on the CPU what its worker does.
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from shared.model import seq2seq_loss
from vanilla.data_parallel import AutocastInReplicas, DataParallelLoss, autocast_in_replicas

# (the run's dtype, the replica thread's default): bf16-mixed as on CUDA, whose threads default to float16;
# 16-mixed with the CPU's own default, bfloat16
REQUESTED_AND_THREAD_DEFAULT = [(torch.bfloat16, torch.float16), (torch.float16, torch.bfloat16)]


def in_replica_thread(module, *args, thread_default: torch.dtype, **kwargs):
    """`module(*args, **kwargs)` as parallel_apply's worker runs it: in a new thread whose autocast dtype is
    `thread_default`, under `torch.amp.autocast(device, enabled=<the caller's>)` with no dtype."""
    enabled = torch.is_autocast_enabled("cpu")
    result = {}

    def worker():
        torch.set_autocast_dtype("cpu", thread_default)  # this thread's own setting: the caller's is untouched
        try:
            with torch.amp.autocast("cpu", enabled=enabled):
                result["output"] = module(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- handed to the caller, as parallel_apply does
            result["error"] = error

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["output"]


def tiny_bart() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    config = BartConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    return BartForConditionalGeneration(config).eval()


def a_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 40, (4, 10), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "labels": torch.randint(3, 40, (4, 6), generator=generator)}


def matmul_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The dtype of every output of the model's last matmul (its LM head), as the forward passes run."""
    seen: list[torch.dtype] = []
    model.lm_head.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    return seen


@pytest.mark.parametrize("requested, thread_default", REQUESTED_AND_THREAD_DEFAULT)
def test_the_stand_in_for_parallel_apply_shows_the_bug_on_a_bare_model(requested, thread_default):
    model = tiny_bart()
    seen = matmul_dtypes(model)
    with torch.autocast("cpu", dtype=requested):
        in_replica_thread(model, **a_batch(), thread_default=thread_default)
    assert seen == [thread_default]  # what DataParallel did before: the thread's default, not the run's dtype


@pytest.mark.parametrize("requested, thread_default", REQUESTED_AND_THREAD_DEFAULT)
def test_vanilla_replicas_autocast_to_the_runs_dtype(requested, thread_default):
    model = tiny_bart()
    seen = matmul_dtypes(model)
    parallel_loss = DataParallelLoss(model, [], seq2seq_loss, autocast_dtype=requested, device_type="cpu")
    replica = parallel_loss.parallel.module  # what DataParallel copies onto each GPU
    batch = a_batch()
    with torch.autocast("cpu", dtype=requested, cache_enabled=False):
        loss = in_replica_thread(replica, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                 thread_default=thread_default)
    assert seen == [requested]
    assert loss.shape == (1,) and loss.dtype == torch.float32  # the loss itself: cross-entropy runs in float32


@pytest.mark.parametrize("requested, thread_default", REQUESTED_AND_THREAD_DEFAULT)
def test_fabrics_wrapped_model_autocasts_to_the_runs_dtype_in_a_replica(requested, thread_default):
    model = tiny_bart()
    seen = matmul_dtypes(model)
    precision = {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}[requested]
    wrapped = autocast_in_replicas(model, precision, device_type="cpu")
    with torch.autocast("cpu", dtype=requested):  # as Fabric's forward does, in its own thread
        in_replica_thread(wrapped, **a_batch(), thread_default=thread_default)
    assert seen == [requested]


def test_without_autocast_the_wrapped_model_gives_the_same_float32_loss():
    model, batch = tiny_bart(), a_batch()
    seen = matmul_dtypes(model)
    expected = seq2seq_loss(model, batch)
    wrapped = AutocastInReplicas(model, "cpu", torch.bfloat16)  # autocast is off in the caller: stays off
    assert torch.equal(seq2seq_loss(wrapped, batch), expected)
    assert torch.equal(in_replica_thread(wrapped, **batch, thread_default=torch.float16).loss, expected)
    assert torch.equal(DataParallelLoss(model, [], seq2seq_loss, torch.bfloat16, "cpu")(batch), expected)
    assert seen == [torch.float32] * 4
    assert autocast_in_replicas(model, "32-true") is model
