"""The parity suite: on the CPU, in float32 (and bf16-mixed where stated), with the same seed, data and command
line, the hand-written trainer and the Lightning trainer produce identical results, feature by feature.

Exact means exact: `torch.equal` on every tensor, byte-identical files. Each test records what both trainers
did for the report printed at the end of the run (`make parity` runs this suite alone and writes the report
and the loss plot). Runs use the tiny model and data so that the whole suite stays within a minute or two.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, load_lightning_train, tiny_args
from tests.parity_report import CURVES, record_parity

pytestmark = [pytest.mark.parity, pytest.mark.slow]
ENV = dict(os.environ, PYTHONWARNINGS="ignore")  # this process's thread count: it changes float sums
lightning_train = load_lightning_train()


def run(trainer: str, tiny_data, out: Path, *extra: str):
    from vanilla import train as vanilla_train

    main = vanilla_train.main if trainer == "vanilla" else lightning_train.main
    return main(tiny_args(tiny_data, out, *extra))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load(path)["state_dict"].items() if k.startswith("model.")}


def fingerprint(path: Path) -> str:
    """Short digest of a checkpoint's model weights, for the report."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model_weights(path).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return f"{len(model_weights(path))} tensors, sha256 {digest.hexdigest()[:10]}"


def weights_equal(a: Path, b: Path) -> bool:
    x, y = model_weights(a), model_weights(b)
    return bool(x) and x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def epoch_losses(out: Path) -> list[tuple[int, str, str]]:
    rows = metrics(out)
    dev = {int(r["epoch"]): r["dev_loss"] for r in rows if r["dev_loss"]}
    train = {int(r["epoch"]): r["train_loss"] for r in rows if r["train_loss"]}
    return [(epoch, train.get(epoch, ""), dev[epoch]) for epoch in sorted(dev)]


def compare(feature: str, a, b, show=str) -> bool:
    equal = a == b
    record_parity(feature, show(a), show(b), equal)
    return equal


def test_training_gives_equal_weights_and_losses(trained_pair):
    v, pl = trained_pair["vanilla"], trained_pair["lightning"]
    CURVES.update({"vanilla": metrics(v), "lightning": metrics(pl)})
    same = weights_equal(v / "checkpoints" / "last.ckpt", pl / "checkpoints" / "last.ckpt")
    record_parity("training, 3 epochs: final weights", fingerprint(v / "checkpoints" / "last.ckpt"),
                  fingerprint(pl / "checkpoints" / "last.ckpt"), same)
    losses = [epoch_losses(out) for out in (v, pl)]
    shown = lambda rows: " ".join(f"{float(t):.3f}/{float(d):.3f}" for _, t, d in rows)  # noqa: E731
    equal_losses = compare("per-epoch train/dev loss", losses[0], losses[1], shown)
    equal_csv = compare("metrics.csv", (v / "metrics.csv").read_bytes(), (pl / "metrics.csv").read_bytes(),
                        lambda b: f"{len(b)} bytes")
    assert same and equal_losses and equal_csv and len(losses[0]) == 3


def test_checkpointing_gives_the_same_files_and_best(trained_pair):
    v, pl = trained_pair["vanilla"], trained_pair["lightning"]
    names = [sorted(p.name for p in (out / "checkpoints").iterdir()) for out in (v, pl)]
    same_names = compare("checkpoint files (top-2 + last)", names[0], names[1],
                         lambda names: ", ".join(name.removesuffix(".ckpt") for name in names))
    best = [load(v / "checkpoints" / "last.ckpt")["callbacks"]["ModelCheckpoint"]["best_model_path"],
            next(state["best_model_path"] for key, state in load(pl / "checkpoints" / "last.ckpt")["callbacks"].items()
                 if key.startswith("ModelCheckpoint"))]
    same_best = compare("best checkpoint", Path(best[0]).name, Path(best[1]).name)
    pairs = [weights_equal(v / "checkpoints" / name, pl / "checkpoints" / name) for name in names[0]]
    record_parity("weights inside each checkpoint pair", f"{len(names[0])} files", f"{len(names[1])} files",
                  all(pairs) and same_names)
    assert same_names and same_best and all(pairs)


def test_test_phase_gives_the_same_predictions_and_scores(trained_pair):
    v, pl = trained_pair["vanilla"], trained_pair["lightning"]
    lines = lambda b: f"{len(b.splitlines())} lines"  # noqa: E731
    same_predictions = compare("test phase: predictions.jsonl", (v / "predictions.jsonl").read_bytes(),
                               (pl / "predictions.jsonl").read_bytes(), lines)
    same_scores = compare("test phase: test_metrics.json", (v / "test_metrics.json").read_text(),
                          (pl / "test_metrics.json").read_text(),
                          lambda text: "bleu_4 " + re.search(r'"bleu_4": ([0-9.]+)', text).group(1)[:6])
    assert same_predictions and same_scores


def test_early_stopping_stops_both_at_the_same_epoch_for_the_same_reason(tiny_data, tmp_path, capsys):
    # a learning rate this high makes dev_loss worse after the first epoch; patience 1 then stops the run
    extra = ("--lr", "0.3", "--max-epochs", "6", "--patience", "1", "--warmup-steps", "0")
    run("vanilla", tiny_data, tmp_path / "vanilla", *extra)
    vanilla_reason = re.search(r"early stopping: (.*)", capsys.readouterr().out).group(1)
    run("lightning", tiny_data, tmp_path / "lightning", *extra)  # prints EarlyStopping.stopping_reason_message
    lightning_reason = re.search(r"early stopping: (.*)", capsys.readouterr().out).group(1)
    last_epoch = [epoch_losses(tmp_path / name)[-1][0] for name in ("vanilla", "lightning")]
    same_epoch = compare("early stopping (patience 1): last epoch", last_epoch[0], last_epoch[1],
                         lambda e: f"stopped after epoch {e}")
    same_reason = compare("early stopping: reason", vanilla_reason, lightning_reason,
                          lambda text: text.split(". Signaling")[0].replace(
                              "Monitored metric dev_loss did not improve in the last", "no better in"))
    assert last_epoch[0] < 5 and same_epoch and same_reason
    assert weights_equal(tmp_path / "vanilla" / "checkpoints" / "last.ckpt",
                         tmp_path / "lightning" / "checkpoints" / "last.ckpt")


def oom_above(limit: int, tried: list[int], searching):
    """A loss function that runs out of memory above `limit` examples per batch, recording trial sizes."""

    def wrap(original):
        def loss(model, batch):
            size = batch["input_ids"].size(0)
            if searching() and model.training and (not tried or tried[-1] != size):
                tried.append(size)
            if size > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return original(model, batch)
        return loss

    return wrap


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_batch_size_search_tries_the_same_sizes(tiny_data, tmp_path, monkeypatch, capsys, mode):
    from vanilla import train as vanilla_train

    extra = ("--auto-batch-size", mode, "--max-epochs", "1")
    monkeypatch.setattr(vanilla_train, "seq2seq_loss", oom_above(40, [], lambda: False)(vanilla_train.seq2seq_loss))
    run("vanilla", tiny_data, tmp_path / "vanilla", *extra)
    found = re.search(r"tried \[([0-9, ]+)\] -> batch size (\d+)", capsys.readouterr().out)
    vanilla_tried, vanilla_size = [int(n) for n in found.group(1).split(", ")], int(found.group(2))

    tried, state = [], {"searching": False}

    class Tuner(lightning_train.Tuner):
        def scale_batch_size(self, *args, **kwargs):
            state["searching"] = True
            try:
                return super().scale_batch_size(*args, **kwargs)
            finally:
                state["searching"] = False

    monkeypatch.setattr(lightning_train, "Tuner", Tuner)
    monkeypatch.setattr(lightning_train, "seq2seq_loss",
                        oom_above(40, tried, lambda: state["searching"])(lightning_train.seq2seq_loss))
    run("lightning", tiny_data, tmp_path / "lightning", *extra)
    lightning_size = int(re.search(r"-> batch size (\d+)", capsys.readouterr().out).group(1))
    show = lambda r: f"{', '.join(map(str, r[0]))} -> {r[1]}"  # noqa: E731
    same = compare(f"batch-size search ({mode}, OOM above 40)", (vanilla_tried, vanilla_size),
                   (tried, lightning_size), show)
    same_weights = weights_equal(tmp_path / "vanilla" / "checkpoints" / "last.ckpt",
                                 tmp_path / "lightning" / "checkpoints" / "last.ckpt")
    record_parity(f"  then 1 epoch at the found size ({mode})",
                  fingerprint(tmp_path / "vanilla" / "checkpoints" / "last.ckpt"),
                  fingerprint(tmp_path / "lightning" / "checkpoints" / "last.ckpt"), same_weights)
    assert same and same_weights


def kill_after(trainer: str, step: int, tiny_data, out: Path, *extra: str) -> None:
    result = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", trainer, str(step),
                             *tiny_args(tiny_data, out, *extra)], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 3, result.stderr[-2000:]


def test_a_run_killed_mid_epoch_and_resumed_equals_the_other_trainers_uninterrupted_run(tiny_data, tmp_path):
    """Killed (os._exit) after step 17, resumed from the step-15 checkpoint two batches into epoch 1."""
    extra = ("--checkpoint-every-n-steps", "5")
    for trainer in ("vanilla", "lightning"):
        run(trainer, tiny_data, tmp_path / f"{trainer}-straight", *extra)
        kill_after(trainer, 17, tiny_data, tmp_path / f"{trainer}-resumed", *extra)
        assert load(tmp_path / f"{trainer}-resumed" / "checkpoints" / "last.ckpt")["global_step"] == 15
        run(trainer, tiny_data, tmp_path / f"{trainer}-resumed", *extra, "--resume", "last")
    last = lambda name: tmp_path / name / "checkpoints" / "last.ckpt"  # noqa: E731
    results = {}
    for trainer, other in (("vanilla", "lightning"), ("lightning", "vanilla")):
        results[trainer] = (weights_equal(last(f"{trainer}-resumed"), last(f"{trainer}-straight")),
                            weights_equal(last(f"{trainer}-resumed"), last(f"{other}-straight")),
                            (tmp_path / f"{trainer}-resumed" / "metrics.csv").read_text()
                            == (tmp_path / f"{other}-straight" / "metrics.csv").read_text())
    mark = lambda equal: "=" if equal else "!="  # noqa: E731
    shown = lambda r: f"own run {mark(r[0])}, other's {mark(r[1])}, csv {mark(r[2])}"  # noqa: E731
    record_parity("kill mid-epoch + --resume last", shown(results["vanilla"]), shown(results["lightning"]),
                  all(results["vanilla"]) and all(results["lightning"]))
    assert all(results["vanilla"]) and all(results["lightning"])


def test_bf16_mixed_gives_equal_weights(tiny_data, tmp_path):
    extra = ("--precision", "bf16-mixed", "--max-epochs", "2")
    for trainer in ("vanilla", "lightning"):
        run(trainer, tiny_data, tmp_path / trainer, *extra)
    a, b = (tmp_path / name / "checkpoints" / "last.ckpt" for name in ("vanilla", "lightning"))
    same = weights_equal(a, b)
    record_parity("bf16-mixed, 2 epochs: final weights", fingerprint(a), fingerprint(b), same)
    assert same and (tmp_path / "vanilla" / "metrics.csv").read_text() == \
        (tmp_path / "lightning" / "metrics.csv").read_text()


DDP_ARGS = ("--strategy", "ddp", "--devices", "2", "--max-epochs", "2", "--checkpoint-every-n-steps", "4")
DDP_ENV = dict(ENV, OMP_NUM_THREADS="1")  # one thread per rank: two ranks share two cores


def run_process(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=REPO, env=DDP_ENV, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def ddp_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """`--strategy ddp --devices 2` on the CPU (gloo), uninterrupted: vanilla starts its second rank itself,
    Lightning's launcher starts Lightning's. 101 examples per rank: 7 batches per epoch."""
    runs = {}
    for trainer in ("vanilla", "lightning"):
        runs[trainer] = tmp_path_factory.mktemp(f"ddp-{trainer}")
        result = run_process(f"{trainer}/train.py", *tiny_args(tiny_data, runs[trainer], *DDP_ARGS, "--overwrite"))
        assert result.returncode == 0, result.stderr[-3000:]
    return runs


@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_gives_equal_weights(ddp_runs):
    v, pl = ddp_runs["vanilla"], ddp_runs["lightning"]
    last = load(pl / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 14 and len(last["callbacks"]["ExactResume"]["rng_states"]) == 2
    assert len(list((pl / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes files
    same = weights_equal(v / "checkpoints" / "last.ckpt", pl / "checkpoints" / "last.ckpt")
    record_parity("DDP, 2 CPU processes: final weights", fingerprint(v / "checkpoints" / "last.ckpt"),
                  fingerprint(pl / "checkpoints" / "last.ckpt"), same)
    files = [(v / name).read_text() == (pl / name).read_text()
             for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json")]
    record_parity("DDP: metrics.csv, predictions, test scores", "3 files", "3 files", all(files))
    assert same and all(files)


@pytest.mark.ddp
def test_ddp_killed_and_resumed_equals_the_other_trainers_uninterrupted_run(ddp_runs, tiny_data, tmp_path):
    """Lightning on two ranks under torchrun, both killed (os._exit) after step 11; last.ckpt is the step-8 save,
    one batch into epoch 1. Resumed with its own launcher, it ends where vanilla's uninterrupted run ends. With a
    loader worker per rank: a DistributedSampler must be set to the resumed epoch before the worker reads it.
    (vanilla's own kill and resume under DDP is tests/test_ddp.py's.)"""
    resumed = tmp_path / "lightning-resumed"
    args = (*DDP_ARGS, "--num-workers", "1")
    killed = run_process("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         "tests/helpers/interrupted_train.py", "lightning", "11", *tiny_args(tiny_data, resumed, *args))
    assert killed.returncode != 0
    last = load(resumed / "checkpoints" / "last.ckpt")
    assert (last["global_step"], last["epoch"], last["callbacks"]["ExactResume"]["mid_epoch"]) == (8, 1, True)
    result = run_process("lightning/train.py", *tiny_args(tiny_data, resumed, *args, "--resume", "last"))
    assert result.returncode == 0, result.stderr[-3000:]
    v = ddp_runs["vanilla"]
    same = weights_equal(resumed / "checkpoints" / "last.ckpt", v / "checkpoints" / "last.ckpt")
    files = all((resumed / name).read_text() == (v / name).read_text()
                for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"))
    record_parity("DDP: lightning killed + --resume last, vs vanilla uninterrupted",
                  fingerprint(v / "checkpoints" / "last.ckpt") + " (uninterrupted)",
                  fingerprint(resumed / "checkpoints" / "last.ckpt") + (", files =" if files else ", files !="),
                  same and files)
    assert same and files


def same_state(a, b) -> bool:
    """Equal, tensors bit for bit (and of one dtype), through dicts, lists and tuples."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def callback_state(checkpoint: dict, name: str, run_dir: Path) -> dict:
    """A callback's state, found by its name (Lightning keys it `Name{...}`), paths relative to the run."""
    state = next(value for key, value in checkpoint["callbacks"].items() if key.split("{")[0] == name)

    def relative(value):
        if isinstance(value, str) and value.startswith(str(run_dir)):
            return Path(value).relative_to(run_dir).as_posix()
        if isinstance(value, dict):
            return {relative(k): relative(v) for k, v in value.items()}
        return value

    return relative(state)


def test_optimizer_scheduler_and_callback_states_are_equal(trained_pair):
    """Beyond the weights: AdamW's moments and step counts, the warm-up scheduler's state, EarlyStopping's and
    ModelCheckpoint's bookkeeping (the keys Lightning saves; paths relative to each run). The loop state is
    each trainer's own format (vanilla's `loop_state`, Lightning's `loops`), as are the RNG states."""
    v, pl = trained_pair["vanilla"], trained_pair["lightning"]
    a, b = load(v / "checkpoints" / "last.ckpt"), load(pl / "checkpoints" / "last.ckpt")
    optimizer = same_state(a["optimizer_states"], b["optimizer_states"])
    moments = sum(len(state) for state in a["optimizer_states"][0]["state"].values())
    record_parity("optimizer state (AdamW) in last.ckpt", f"{moments} tensors", f"{moments} tensors", optimizer)
    scheduler = compare("LR scheduler state in last.ckpt", a["lr_schedulers"], b["lr_schedulers"],
                        lambda s: f"step {s[0]['last_epoch']}, lr {s[0]['_last_lr'][0]:.2e}")
    scheduler = scheduler and same_state(a["lr_schedulers"], b["lr_schedulers"])
    callbacks = {}
    for name in ("EarlyStopping", "ModelCheckpoint"):
        lightning_state = callback_state(b, name, pl)
        vanilla_state = {key: callback_state(a, name, v)[key] for key in lightning_state}  # Lightning's keys
        callbacks[name] = same_state(vanilla_state, lightning_state)
        record_parity(f"{name} state in last.ckpt", f"{len(vanilla_state)} keys", f"{len(lightning_state)} keys",
                      callbacks[name])
    assert optimizer and scheduler and all(callbacks.values())


def test_fine_tuning_a_pretrained_model_gives_equal_weights(trained_pair, tiny_data, tmp_path):
    """The path real users take: `--model DIR` (here the tiny run's own export, loaded with from_pretrained),
    5 steps of one epoch, then the test phase. from_pretrained returns a model in eval mode; both trainers must
    train it with dropout on (Lightning keeps each submodule's mode as it finds it)."""
    args = ["--data-dir", str(tiny_data), "--model", str(trained_pair["vanilla"] / "export"), "--batch-size", "16",
            "--max-epochs", "1", "--limit-train-batches", "5", "--lr", "3e-3", "--warmup-steps", "2",
            "--num-beams", "2", "--max-target-length", "16"]
    outputs = {trainer: tmp_path / trainer for trainer in ("vanilla", "lightning")}
    from vanilla import train as vanilla_train

    vanilla_train.main([*args, "--output-dir", str(outputs["vanilla"])])
    lightning_train.main([*args, "--output-dir", str(outputs["lightning"])])
    a, b = (out / "checkpoints" / "last.ckpt" for out in outputs.values())
    same = weights_equal(a, b)
    record_parity("fine-tuning --model DIR, 5 steps: final weights", fingerprint(a), fingerprint(b), same)
    files = compare("fine-tuning: predictions.jsonl, test_metrics.json",
                    [(outputs["vanilla"] / name).read_text() for name in ("predictions.jsonl", "test_metrics.json")],
                    [(outputs["lightning"] / name).read_text() for name in ("predictions.jsonl", "test_metrics.json")],
                    lambda texts: "bleu_4 " + re.search(r'"bleu_4": ([0-9.]+)', texts[1]).group(1)[:6])
    pretrained = model_weights(trained_pair["vanilla"] / "checkpoints" / "last.ckpt")
    assert same and files and not all(torch.equal(tensor, pretrained[k]) for k, tensor in model_weights(a).items())


def test_each_trainer_tests_the_others_checkpoint(trained_pair, tiny_data, tmp_path):
    """Checkpoints share Lightning's layout, so each trainer's test phase reads the other's best checkpoint and
    writes the predictions the other wrote. Resuming across trainers is refused in one line: the loop state
    (position, sampler, RNG) is each trainer's own."""
    import pytorch_lightning as pl_

    from shared.cli import parse_args
    from shared.pipeline import make_model, prepare_data
    from shared.predictions import write_test_report
    from vanilla.evaluation_loop import run_test
    from vanilla.precision import Precision

    v, pl = trained_pair["vanilla"], trained_pair["lightning"]
    args = parse_args("parity", "unused", tiny_args(tiny_data, tmp_path / "unused"))
    data = prepare_data(args, tmp_path, save_tokenizer=False)
    best = {name: out / "checkpoints" / json.loads((out / "test_metrics.json").read_text())["checkpoint"]
            for name, out in trained_pair.items()}

    by_vanilla = tmp_path / "vanilla-tests-lightning"
    by_vanilla.mkdir()
    run_test(make_model(args, data.tokenizer), data.tokenizer, data.test, str(best["lightning"]),
             torch.device("cpu"), Precision("32-true", "cpu"), args.batch_size, args.num_beams, args.max_target_length,
             by_vanilla)

    module = lightning_train.QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    tester = pl_.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    tester.test(module, datamodule=lightning_train.QGDataModule(data, args.batch_size, 0),
                ckpt_path=best["vanilla"], weights_only=True, verbose=False)
    by_lightning = tmp_path / "lightning-tests-vanilla"
    by_lightning.mkdir()
    write_test_report(by_lightning, data.test.examples, module.generated, str(best["vanilla"]))

    same_v = (by_vanilla / "predictions.jsonl").read_bytes() == (pl / "predictions.jsonl").read_bytes()
    same_l = (by_lightning / "predictions.jsonl").read_bytes() == (v / "predictions.jsonl").read_bytes()
    record_parity("cross-loading: test the other's best checkpoint",
                  "tests lightning's: " + ("same predictions" if same_v else "DIFFERENT predictions"),
                  "tests vanilla's: " + ("same predictions" if same_l else "DIFFERENT predictions"), same_v and same_l)

    refusals = {}
    for trainer, other in (("vanilla", "lightning"), ("lightning", "vanilla")):
        result = subprocess.run([sys.executable, f"{trainer}/train.py",
                                 *tiny_args(tiny_data, tmp_path / f"{trainer}-resumes", "--resume",
                                            str(trained_pair[other] / "checkpoints" / "last.ckpt"))],
                                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240)
        lines = result.stderr.strip().splitlines()
        refusals[trainer] = (result.returncode == 2 and len(lines) == 1
                             and f"was written by {other}/train.py" in lines[0])
    shown = {trainer: "refused in one line" if refused else "NOT refused" for trainer, refused in refusals.items()}
    record_parity("cross-loading: resume the other's checkpoint", shown["vanilla"], shown["lightning"],
                  all(refusals.values()))
    assert same_v and same_l and all(refusals.values())
