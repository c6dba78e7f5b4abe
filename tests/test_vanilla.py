"""The hand-written trainer end to end, on tiny data: artifacts, exact resume, accumulation, precision, search."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from shared.checkpoint_file import read_checkpoint as load_checkpoint
from shared.squad import read_squad
from tests.conftest import tiny_args
from vanilla import train as vanilla_train
from vanilla.fit_loop import FitLoop

pytestmark = pytest.mark.slow


def run(tiny_data, out, *extra):
    return vanilla_train.main(tiny_args(tiny_data, out, *extra))


def read_metrics(out):
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def checkpoints(out):
    return {p.name: load_checkpoint(p) for p in sorted((out / "checkpoints").iterdir())}


def assert_same_training(a, b):
    """Same checkpoint files holding bit-identical weights, optimizer state and bookkeeping; same logs/tests."""
    ca, cb = checkpoints(a), checkpoints(b)
    assert list(ca) == list(cb)
    for name in ca:
        x, y = ca[name], cb[name]
        assert x["state_dict"].keys() == y["state_dict"].keys()
        for key in x["state_dict"]:
            assert torch.equal(x["state_dict"][key], y["state_dict"][key]), (name, key)
        states = x["optimizer_states"][0]["state"], y["optimizer_states"][0]["state"]
        for p, q in zip(states[0].values(), states[1].values(), strict=True):
            assert all(torch.equal(p[k], q[k]) for k in p), name
        assert (x["epoch"], x["global_step"]) == (y["epoch"], y["global_step"])
        assert x["callbacks"]["EarlyStopping"]["wait_count"] == y["callbacks"]["EarlyStopping"]["wait_count"]
    assert read_metrics(a) == read_metrics(b)
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()
    assert (a / "test_metrics.json").read_text() == (b / "test_metrics.json").read_text()


def test_run_leaves_every_artifact(tiny_data, tmp_path):
    out = tmp_path / "run"
    scores = run(tiny_data, out)
    assert set(scores) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"}
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in names and len(names) == 2
    assert names[0].startswith("epoch=") and names[0].endswith(".ckpt") and "-dev_loss=" in names[0]

    rows = read_metrics(out)
    assert list(rows[0]) == ["dev_loss", "epoch", "step", "train_loss"]
    assert len(rows) == 6  # a dev row and a train row per epoch
    # 13 batches per epoch; epoch-end rows carry the index of the epoch's last optimizer step, as in Lightning
    assert [(r["epoch"], r["step"]) for r in rows[::2]] == [("0", "12"), ("1", "25"), ("2", "38")]
    assert all(r["dev_loss"] and not r["train_loss"] for r in rows[::2])
    assert all(r["train_loss"] and not r["dev_loss"] for r in rows[1::2])

    hparams = yaml.safe_load((out / "hparams.yaml").read_text())
    assert hparams["batch_size"] == 16 and hparams["model_size"] == "tiny" and hparams["max_epochs"] == 3
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    test_examples = read_squad(tiny_data / "test.json").examples
    assert [p["id"] for p in predictions] == [e.id for e in test_examples]
    assert set(predictions[0]) == {"id", "context", "answer", "reference", "generated"}
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["num_examples"] == len(test_examples) and report["checkpoint"] == names[0]
    assert all(0.0 <= report[k] <= 1.0 for k in ("bleu_1", "bleu_4", "rouge_l"))

    # the export loads in plain transformers, and the ask command uses it
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from shared.ask import ask

    model = AutoModelForSeq2SeqLM.from_pretrained(out / "export")
    tokenizer = AutoTokenizer.from_pretrained(out / "export")
    best = load_checkpoint(out / "checkpoints" / names[0])["state_dict"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["model." + name]), name
    assert isinstance(ask(model.eval(), tokenizer, "Ada was born in London.", "London"), str)


def test_early_stopping_stops_the_run(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    # a learning rate this high makes dev_loss worse after the first epoch
    run(tiny_data, out, "--lr", "0.3", "--max-epochs", "6", "--patience", "1", "--warmup-steps", "0")
    rows = read_metrics(out)
    epochs = sorted({int(r["epoch"]) for r in rows})
    dev = [float(r["dev_loss"]) for r in rows if r["dev_loss"]]
    stop_epoch = epochs[-1]
    assert stop_epoch < 5
    assert not (min(dev[:-1]) > dev[-1])  # the last epoch did not improve
    assert "Signaling Trainer to stop" in capsys.readouterr().out


class Interrupted(Exception):
    pass


def interrupt_after_step(monkeypatch, step):
    original = FitLoop.training_step

    def training_step(self, *args, **kwargs):
        before = self.position.global_step
        loss = original(self, *args, **kwargs)
        if before < step == self.position.global_step:
            raise Interrupted(f"simulated crash after step {step}")
        return loss

    monkeypatch.setattr(FitLoop, "training_step", training_step)


@pytest.mark.parametrize("stop_at, every_n", [(17, "5"), (14, "0")], ids=["mid-epoch", "end-of-epoch"])
def test_resume_gives_the_same_run_as_no_interruption(tiny_data, tmp_path, monkeypatch, stop_at, every_n):
    """13 batches per epoch. Crash after step 17: last.ckpt is the mid-epoch save at step 15 (epoch 1, batch 2).
    Crash after step 14 without step saves: last.ckpt is the end of epoch 0. Either way the resumed run must end
    bit for bit where an uninterrupted one does."""
    extra = ("--checkpoint-every-n-steps", every_n)
    run(tiny_data, tmp_path / "straight", *extra)
    with monkeypatch.context() as patch:
        interrupt_after_step(patch, stop_at)
        with pytest.raises(Interrupted):
            run(tiny_data, tmp_path / "resumed", *extra)
    last = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    if every_n == "5":
        loop = last["loop_state"]
        assert (last["global_step"], loop["batches_done"], loop["epoch_finished"]) == (15, 2, False)
    else:
        assert (last["global_step"], last["loop_state"]["epoch_finished"]) == (13, True)
    run(tiny_data, tmp_path / "resumed", *extra, "--resume", "last")
    assert_same_training(tmp_path / "straight", tmp_path / "resumed")


def test_gradient_accumulation_and_clipping(tiny_data, tmp_path, monkeypatch):
    clips = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        norm = original(parameters, max_norm, *args, **kwargs)
        clips.append(max_norm)
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    out = tmp_path / "run"
    run(tiny_data, out, "--accumulate-grad-batches", "3", "--limit-train-batches", "7", "--max-epochs", "2",
        "--gradient-clip-val", "0.5")
    steps = [int(r["step"]) for r in read_metrics(out)[::2]]
    assert steps == [2, 5]  # steps after batches 3, 6 and the epoch's last (7): three per epoch, last index 2, 5
    assert clips == [0.5] * 6


def test_bf16_mixed_and_16_mixed_fallback_on_cpu(tiny_data, tmp_path, capsys):
    run(tiny_data, tmp_path / "bf16", "--precision", "bf16-mixed", "--max-epochs", "1")
    run(tiny_data, tmp_path / "fp16", "--precision", "16-mixed", "--max-epochs", "1")
    assert "using bf16-mixed on the CPU" in capsys.readouterr().out
    # 16-mixed falls back to exactly bf16-mixed
    assert_same_training(tmp_path / "bf16", tmp_path / "fp16")
    fp32 = tmp_path / "fp32"
    run(tiny_data, fp32, "--max-epochs", "1")
    assert read_metrics(fp32)[0]["dev_loss"] != read_metrics(tmp_path / "bf16")[0]["dev_loss"]


def test_auto_batch_size_leaves_the_run_as_if_it_had_started_at_the_found_size(tiny_data, tmp_path, monkeypatch,
                                                                                capsys):
    def loss_with_memory_limit(model, batch):
        if batch["input_ids"].size(0) > 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(model, batch)

    original = vanilla_train.seq2seq_loss
    monkeypatch.setattr(vanilla_train, "seq2seq_loss", loss_with_memory_limit)
    searched = tmp_path / "searched"
    run(tiny_data, searched, "--auto-batch-size", "power", "--max-epochs", "2")
    assert "tried [16, 4, 8, 16, 32, 64] -> batch size 32" in capsys.readouterr().out
    assert yaml.safe_load((searched / "hparams.yaml").read_text())["batch_size"] == 32
    direct = tmp_path / "direct"
    run(tiny_data, direct, "--batch-size", "32", "--max-epochs", "2")
    assert_same_training(searched, direct)  # model, optimizer and RNG were restored after the search

    run(tiny_data, tmp_path / "bin", "--auto-batch-size", "binsearch", "--max-epochs", "1")
    assert "tried [16, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41] -> batch size 38" in capsys.readouterr().out


def test_refuses_to_overwrite_a_run(tiny_data, tmp_path):
    from shared.errors import UserError

    out = tmp_path / "run"
    run(tiny_data, out, "--max-epochs", "1")
    with pytest.raises(UserError, match="already holds a run"):
        run(tiny_data, out, "--max-epochs", "1")
    run(tiny_data, out, "--max-epochs", "1", "--overwrite")
    assert len(read_metrics(out)) == 2
    with pytest.raises(UserError, match="no checkpoint at"):
        run(tiny_data, tmp_path / "empty", "--resume", "last")
