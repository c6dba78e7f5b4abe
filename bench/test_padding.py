"""Dynamic padding (this repository: each batch padded to its own longest sequence) against padding every input
to 512 tokens, as the seed's reference repository does: the same bare training loop, model and data; reported
as real (non-pad) target tokens trained per second. The model is built with 512 positions for both, so that
the only difference is the padding."""

from __future__ import annotations

import pytest
import torch

from bench.conftest import run_args
from bench.runners import StepLog, bare_loop
from shared.cli import parse_args
from shared.data import PadCollator

STEPS, ROUNDS = 12, 2


class PadTo512(PadCollator):
    def __call__(self, items):
        batch = super().__call__(items)
        width = 512 - batch["input_ids"].size(1)
        batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, width), value=self.pad_token_id)
        batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, width), value=0)
        return batch


@pytest.mark.parametrize("padding", ["dynamic", "to 512"])
def test_padding(benchmark, bench_data, tmp_path, padding):
    args = parse_args("bench", "unused", run_args(bench_data, tmp_path / "run", "small", STEPS,
                                                  "--max-source-length", "512"))
    logs: list[StepLog] = []
    collate_class = PadCollator if padding == "dynamic" else PadTo512

    def run():
        logs.append(bare_loop(args, STEPS, collate_class=collate_class))

    benchmark.group = "padding: bare loop, small model"
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    summaries = [log.summary() for log in logs]
    benchmark.extra_info.update(padding=padding, **{key: sorted(s[key] for s in summaries)[len(summaries) // 2]
                                                    for key in ("ms_per_step", "target_tokens_per_s")})
    assert all(len(log.times) == STEPS for log in logs)
