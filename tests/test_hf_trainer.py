"""The transformers Seq2SeqTrainer rung (hf_trainer/): what the Trainer does as shipped where it differs from the
other rungs, and the rung's one-line refusals. Its parity with the other rungs is in tests/test_parity.py."""

from __future__ import annotations

import copy
import csv
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torchmetrics import MeanMetric
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
)

from shared.checkpoint_file import CheckpointError, model_weights
from shared.data import PadCollator
from shared.errors import UserError
from tests.conftest import HF_TRAINER, REPO, load_train, tiny_args

PAD = 1


def metrics_rows(out) -> list[dict]:
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tiny_bart() -> BartForConditionalGeneration:
    """No dropout: the two batches' gradients do not depend on the order the sampler draws them in."""
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(
        vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32, dropout=0.0,
        pad_token_id=PAD, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))


EXAMPLES = [{"input_ids": [0, 5, 6, 7, 2], "labels": [0, 8, 9, 2]},
            {"input_ids": [0, 10, 11, 2], "labels": [0, 12, 13, 14, 15, 2]}]


class GradientsBeforeTheStep(TrainerCallback):
    def __init__(self):
        self.gradients = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {name: p.grad.clone() for name, p in model.named_parameters()}


def gradients_of_one_step(trainer_class, tmp_path, **extra) -> dict[str, torch.Tensor]:
    """One optimizer step over the two examples, one per batch, accumulated (no clipping)."""
    seen = GradientsBeforeTheStep()
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1,
                                    gradient_accumulation_steps=2, max_steps=1, max_grad_norm=0.0, use_cpu=True,
                                    report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = trainer_class(model=tiny_bart(), args=args, train_dataset=EXAMPLES,
                            data_collator=PadCollator(PAD, with_index=False), callbacks=[seen], **extra)
    trainer.train()
    return seen.gradients


def mean_of_the_two_losses_gradients() -> dict[str, torch.Tensor]:
    """What Lightning (and every other rung) accumulates: each batch's mean loss divided by 2."""
    model = copy.deepcopy(tiny_bart()).train()
    for example in EXAMPLES:
        batch = PadCollator(PAD, with_index=False)([example])
        (model(**batch).loss / 2).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_the_trainer_as_shipped_doubles_bart_gradients_with_accumulation(tmp_path):
    """BART's forward takes **kwargs, so the Trainer takes its loss for one already scaled by num_items_in_batch and
    does not divide by the accumulation steps; BART's loss is a plain mean, so the gradients are the sum of the two
    batches', not their mean: exactly twice (upstream #37766). hf_trainer/qg_trainer.py divides as Lightning does."""
    expected = mean_of_the_two_losses_gradients()
    shipped = gradients_of_one_step(Seq2SeqTrainer, tmp_path / "shipped")
    fixed = gradients_of_one_step(load_train(HF_TRAINER).QGTrainer, tmp_path / "fixed",
                                  train_loss=MeanMetric())
    assert expected.keys() == shipped.keys() == fixed.keys()
    assert all(torch.equal(shipped[name], 2 * expected[name]) for name in expected)
    assert all(torch.equal(fixed[name], expected[name]) for name in expected)
    assert any(expected[name].abs().sum() > 0 for name in expected)


@pytest.mark.parametrize("flag", [("--num-nodes", "2"), ("--resume", "some/checkpoint-13"),
                                  ("--auto-batch-size", "power"), ("--accelerator", "gpu"), ("--min-delta", "0.01")])
def test_what_the_rung_does_not_run_is_refused_in_one_line(flag, tiny_data, tmp_path):
    with pytest.raises(UserError) as error:
        load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", *flag))
    assert str(error.value).startswith(f"{flag[0]}") and ": not" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault, message", [
    ("truncated weights", "model.safetensors: not a readable checkpoint"),
    ("corrupt optimizer", "optimizer.pt: not a readable checkpoint"),
    ("no rng_state.pth", "rng_state.pth: missing"),
    ("another model", "model.safetensors: weights do not fit this model configuration (final_logits_bias: (1, 400)"),
])
def test_a_checkpoint_resume_cannot_continue_is_refused_in_one_line(hf_trained_run, tiny_data, tmp_path, fault,
                                                                     message):
    """Where resume_from_checkpoint would end in a traceback (hf_trainer/checkpoint_check.py); metrics.csv and the
    checkpoints stay as they were (as tests/test_faults.py holds the other rungs to)."""
    out = tmp_path / "run"
    shutil.copytree(hf_trained_run, out)
    latest = out / "checkpoints" / "checkpoint-39"
    if fault == "truncated weights":
        (latest / "model.safetensors").write_bytes((latest / "model.safetensors").read_bytes()[:3000])
    elif fault == "corrupt optimizer":
        (latest / "optimizer.pt").write_bytes(b"not a checkpoint\n")
    elif fault == "no rng_state.pth":
        (latest / "rng_state.pth").unlink()
    kept = lambda: {path: path.read_bytes() for path in [out / "metrics.csv", *(out / "checkpoints").rglob("*")]  # noqa: E731
                    if path.is_file()}
    before = kept()
    extra = ("--vocab-size", "300") if fault == "another model" else ()
    with pytest.raises(CheckpointError) as error:
        load_train(HF_TRAINER).main([*tiny_args(tiny_data, out, "--save-top-k", "2", *extra), "--resume", "last"])
    assert message in str(error.value) and str(latest) in str(error.value) and "\n" not in str(error.value)
    assert kept() == before and not list(out.glob(".metrics.csv.*"))


@pytest.mark.parametrize("flags", [("--strategy", "ddp", "--devices", "2"), ("--devices", "2")])
def test_ddp_without_torchrun_says_how_to_start_it(flags, tiny_data, tmp_path):
    """transformers' Trainer starts no processes: torchrun does (the other rungs start their own ranks)."""
    with pytest.raises(UserError, match=r"start hf_trainer/train.py with torchrun --nproc-per-node 2 \(transformers"):
        load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", *flags))
    assert not (tmp_path / "run").exists()


def test_data_parallel_on_the_cpu_is_refused_in_the_other_rungs_line(tiny_data, tmp_path):
    with pytest.raises(UserError, match=r"^--strategy dp: torch.nn.DataParallel replicates the model over CUDA GPUs"):
        load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", "--strategy", "dp"))


def test_a_limit_that_ends_an_epoch_inside_an_accumulation_group_is_refused(tiny_data, tmp_path):
    with pytest.raises(UserError, match="--limit-train-batches 5: 5 batches per epoch end inside a group"):
        load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", "--limit-train-batches", "5",
                                              "--accumulate-grad-batches", "2"))


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_loss_stops_the_run_at_once_as_lightning_stops_it(tiny_data, tmp_path, monkeypatch, capsys, bad):
    """transformers' EarlyStoppingCallback alone would count a NaN dev_loss as one epoch without improvement and
    train on; hf_trainer/early_stopping.py stops at once, keeps the best checkpoint and tests it (as
    tests/test_faults.py checks of the other rungs)."""
    train = load_train(HF_TRAINER)
    original, steps = train.QGTrainer.compute_loss, [0]

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        if model.training:
            steps[0] += 1
            if steps[0] > 13:  # from epoch 1 on
                return loss * float(bad)
        return loss

    monkeypatch.setattr(train.QGTrainer, "compute_loss", compute_loss)
    out = tmp_path / "run"
    report = train.main(tiny_args(tiny_data, out, "--max-epochs", "5"))
    printed = capsys.readouterr().out
    assert re.search(r"early stopping: Monitored metric dev_loss = (nan|inf) is not finite", printed), printed
    assert report["checkpoint"] == "checkpoint-13"  # epoch 0's, the best, kept and tested
    assert (out / "predictions.jsonl").exists() and len(metrics_rows(out)) == 4  # epochs 0 and 1, no more


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_last_it_ends_as_the_uninterrupted_run(hf_trained_run, tiny_data, tmp_path):
    """Killed (os._exit) after step 17, in epoch 1, without step checkpoints: `--resume last` continues from the
    epoch's end before, checkpoint-13, with the Trainer's own resume_from_checkpoint (its RNG states, optimizer,
    scheduler and early stopping's count) and the rows of metrics.csv logged before it: the run ends with the
    uninterrupted run's weights and files, those of the other rungs too (tests/test_parity.py; a resume from a step
    checkpoint inside an epoch is there too)."""
    out = tmp_path / "resumed"
    args = tiny_args(tiny_data, out, "--save-top-k", "2")  # as hf_trained_run
    killed = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", HF_TRAINER, "17", *args],
                            cwd=REPO, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True,
                            timeout=240)
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["checkpoint-13"]
    load_train(HF_TRAINER).main([*args, "--resume", "last"])
    final = [f"checkpoint-{step}" for step in (26, 39)]
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == final
    resumed, straight = model_weights(out / "checkpoints" / final[-1]), model_weights(
        hf_trained_run / "checkpoints" / final[-1])
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)
    for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
        assert (out / name).read_bytes() == (hf_trained_run / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("name, status", [("TERM", 143), ("INT", 130)])
def test_a_signal_saves_the_step_under_way_and_resume_last_ends_as_the_uninterrupted_run(hf_trained_run, tiny_data,
                                                                                          tmp_path, name, status):
    """SIGTERM (a scheduler) or Ctrl-C during step 17: the step ends, checkpoint-17 is saved and kept (the Trainer's
    own end of training would delete it: save_total_limit), one line says how to go on, no test phase, exit status
    128 + the signal. Resumed (SIGTERM's run), it continues inside epoch 1 and ends as the uninterrupted run; the
    same checkpoint without the epoch's starting generators is refused in one line."""
    out = tmp_path / "run"
    args = tiny_args(tiny_data, out, "--save-top-k", "2")  # as hf_trained_run
    stopped = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", HF_TRAINER, f"signal:{name}:17",
                              *args], cwd=REPO, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True,
                             text=True, timeout=240)
    assert stopped.returncode == status, stopped.stderr[-2000:]
    said = [line for line in (stopped.stdout + stopped.stderr).splitlines() if "--resume last" in line]
    assert said == [f"interrupted by SIG{name} at epoch 1, step 17: saved {out / 'checkpoints' / 'checkpoint-17'}; "
                    f"continue with --resume last"], stopped.stdout[-2000:]
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["checkpoint-13", "checkpoint-17"]
    assert not (out / "predictions.jsonl").exists()
    if name == "INT":
        return
    without = tmp_path / "without-epoch-start"
    shutil.copytree(out, without)
    (without / "checkpoints" / "checkpoint-17" / "exact_resume.pt").unlink()
    with pytest.raises(CheckpointError, match="saved inside an epoch without exact_resume.pt"):
        load_train(HF_TRAINER).main([*tiny_args(tiny_data, without, "--save-top-k", "2"), "--resume", "last"])
    load_train(HF_TRAINER).main([*args, "--resume", "last"])
    final = model_weights(out / "checkpoints" / "checkpoint-39")
    straight = model_weights(hf_trained_run / "checkpoints" / "checkpoint-39")
    assert final.keys() == straight.keys() and all(torch.equal(final[k], straight[k]) for k in final)
    for file in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
        assert (out / file).read_bytes() == (hf_trained_run / file).read_bytes(), file



@pytest.mark.slow
def test_a_run_that_reaches_max_epochs_says_nothing_of_early_stopping(tiny_data, tmp_path, capsys):
    """The Trainer also sets should_training_stop after the last epoch's last step: that is no early stop."""
    load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", "--max-epochs", "1"))
    printed = capsys.readouterr().out
    assert "testing " in printed and "early stopping" not in printed, printed


def test_bf16_mixed_runs_every_forward_under_autocast_generation_included(tiny_data, tmp_path, monkeypatch):
    """accelerate autocasts the model's forward alone; `generate` calls the encoder outside it, so the test phase
    would encode in float32 where the other rungs autocast their whole test step. qg_trainer.py's prediction_step
    puts generation under autocast too; without it the test phase's encoder calls run without (seen)."""
    from transformers.models.bart import modeling_bart

    calls = []  # (in generate, under bf16 autocast) per call of the encoder
    encoder_forward, generate = modeling_bart.BartEncoder.forward, modeling_bart.BartForConditionalGeneration.generate
    generating = []

    def recorded(self, *args, **kwargs):
        calls.append((bool(generating), torch.is_autocast_enabled("cpu")
                      and torch.get_autocast_dtype("cpu") == torch.bfloat16))
        return encoder_forward(self, *args, **kwargs)

    def generate_recorded(self, *args, **kwargs):
        generating.append(True)
        try:
            return generate(self, *args, **kwargs)
        finally:
            generating.pop()

    monkeypatch.setattr(modeling_bart.BartEncoder, "forward", recorded)
    monkeypatch.setattr(modeling_bart.BartForConditionalGeneration, "generate", generate_recorded)
    load_train(HF_TRAINER).main(tiny_args(tiny_data, tmp_path / "run", "--precision", "bf16-mixed", "--max-epochs",
                                          "1", "--limit-train-batches", "2"))
    assert {in_generate for in_generate, _ in calls} == {True, False}  # training and validation, and the test phase
    assert all(autocast for _, autocast in calls), calls
