"""The parity suite: on the CPU, in float32 (and bf16-mixed where stated), with the same seed, data and command
line, the three trainers -- by hand (vanilla/), with Fabric (fabric/) and with the Trainer (lightning/) -- produce
identical results, feature by feature; transformers' Seq2SeqTrainer (hf_trainer/) too in the rows that name it.

Exact means exact: `torch.equal` on every tensor, byte-identical files (a bitwise comparison); where the trainers
decide or say something (a stop epoch and reason, the batch sizes tried, the files kept, a refusal), the same
decision, as text or numbers (a behaviour check). Each test records what every trainer did for the report printed
at the end of the run; tests/parity_report.py's EXPECTED lists every comparison, its kind and its test, and the
session fails when one was not recorded (`make parity` runs this suite alone and writes the report and the loss
plot). Runs use the tiny model and data so that the whole suite stays within a few minutes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.checkpoint_file import model_weights  # a .ckpt file, or the transformers Trainer's checkpoint-N/
from shared.errors import UserError
from tests.conftest import HF_TRAINER, REPO, TRAINERS, load_train, loss_home, tiny_args
from tests.parity_report import CURVES, record_parity

pytestmark = [pytest.mark.parity, pytest.mark.slow]
ENV = dict(os.environ, PYTHONWARNINGS="ignore")  # this process's thread count: it changes float sums


def run(trainer: str, tiny_data, out: Path, *extra: str):
    return load_train(trainer).main(tiny_args(tiny_data, out, *extra))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def last_checkpoint(out: Path) -> Path:
    """The checkpoint holding a run's final weights: last.ckpt, or the Trainer's checkpoint-N/ of the last step
    (which it keeps only where it is among the save_total_limit most recent or the best)."""
    if (out / "checkpoints" / "last.ckpt").is_file():
        return out / "checkpoints" / "last.ckpt"
    final = out / "checkpoints" / f"checkpoint-{int(metrics(out)[-1]['step']) + 1}"
    assert final.is_dir(), f"{out}: the Trainer did not keep the final weights ({final.name})"
    return final


def best_checkpoint(out: Path) -> Path:
    """The checkpoint the run tested (test_metrics.json names it)."""
    return out / "checkpoints" / json.loads((out / "test_metrics.json").read_text())["checkpoint"]


def scores(out: Path) -> dict:
    """test_metrics.json without the tested checkpoint's name (each rung names its checkpoints its own way)."""
    return {k: v for k, v in json.loads((out / "test_metrics.json").read_text()).items() if k != "checkpoint"}


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


def all_weights_equal(paths: dict[str, Path]) -> bool:
    first, *others = paths.values()
    return all(weights_equal(first, other) for other in others)


def metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def epoch_losses(out: Path) -> list[tuple[int, str, str]]:
    rows = metrics(out)
    dev = {int(r["epoch"]): r["dev_loss"] for r in rows if r["dev_loss"]}
    train = {int(r["epoch"]): r["train_loss"] for r in rows if r["train_loss"]}
    return [(epoch, train.get(epoch, ""), dev[epoch]) for epoch in sorted(dev)]


def compare(feature: str, results: dict, show=str) -> bool:
    """Record one row: equal when every trainer's result equals vanilla's."""
    equal = all(result == results["vanilla"] for result in results.values())
    record_parity(feature, {trainer: show(result) for trainer, result in results.items()}, equal)
    return equal


def test_training_gives_equal_weights_and_losses(trained_runs, hf_trained_run):
    runs = {**trained_runs, HF_TRAINER: hf_trained_run}
    CURVES.update({trainer: metrics(out) for trainer, out in runs.items()})
    last = {trainer: last_checkpoint(out) for trainer, out in runs.items()}
    same = all_weights_equal(last)
    record_parity("training, 3 epochs: final weights", {t: fingerprint(path) for t, path in last.items()}, same)
    losses = {trainer: epoch_losses(out) for trainer, out in runs.items()}
    shown = lambda rows: " ".join(f"{float(t):.3f}/{float(d):.3f}" for _, t, d in rows)  # noqa: E731
    equal_losses = compare("per-epoch train/dev loss", losses, shown)
    equal_csv = compare("metrics.csv", {t: (out / "metrics.csv").read_bytes() for t, out in runs.items()},
                        lambda b: f"{len(b)} bytes")
    assert same and equal_losses and equal_csv and len(losses["vanilla"]) == 3


def test_checkpointing_gives_the_same_files_and_best(trained_runs, hf_trained_run):
    names = {t: sorted(p.name for p in (out / "checkpoints").iterdir()) for t, out in trained_runs.items()}
    same_names = compare("checkpoint files (top-2 + last)", names,
                         lambda names: ", ".join(name.removesuffix(".ckpt") for name in names))
    best = {t: Path(callback_state(load(out / "checkpoints" / "last.ckpt"), "ModelCheckpoint", out)["best_model_path"])
            .name for t, out in trained_runs.items()}
    same_best = compare("best checkpoint", best)
    pairs = [all_weights_equal({t: out / "checkpoints" / name for t, out in trained_runs.items()})
             for name in names["vanilla"]]
    record_parity("weights inside each checkpoint trio", {t: f"{len(n)} files" for t, n in names.items()},
                  all(pairs) and same_names)
    # the transformers Trainer keeps its own checkpoint-N/ folders (the most recent save_total_limit, and the best)
    tested = {t: best_checkpoint(out) for t, out in {**trained_runs, HF_TRAINER: hf_trained_run}.items()}
    same_tested = all_weights_equal(tested)
    record_parity("the best checkpoint's weights (the one tested)",
                  {t: f"{path.name.removesuffix('.ckpt')}: {fingerprint(path)}" for t, path in tested.items()},
                  same_tested)
    assert same_names and same_best and all(pairs) and same_tested


def test_test_phase_gives_the_same_predictions_and_scores(trained_runs, hf_trained_run):
    runs = {**trained_runs, HF_TRAINER: hf_trained_run}
    lines = lambda b: f"{len(b.splitlines())} lines"  # noqa: E731
    same_predictions = compare("test phase: predictions.jsonl",
                               {t: (out / "predictions.jsonl").read_bytes() for t, out in runs.items()}, lines)
    same_scores = compare("test phase: test_metrics.json's scores", {t: scores(out) for t, out in runs.items()},
                          lambda found: f"bleu_4 {found['bleu_4']:.4f}")
    assert same_predictions and same_scores


def test_early_stopping_stops_all_at_the_same_epoch_for_the_same_reason(tiny_data, tmp_path, capsys):
    # a learning rate this high makes dev_loss worse after the first epoch; patience 1 then stops the run
    extra = ("--lr", "0.3", "--max-epochs", "6", "--patience", "1", "--warmup-steps", "0")
    reasons = {}
    for trainer in (*TRAINERS, HF_TRAINER):
        run(trainer, tiny_data, tmp_path / trainer, *extra)
        reasons[trainer] = re.search(r"early stopping: (.*)", capsys.readouterr().out).group(1)
    last_epoch = {trainer: epoch_losses(tmp_path / trainer)[-1][0] for trainer in (*TRAINERS, HF_TRAINER)}
    same_epoch = compare("early stopping (patience 1): last epoch", last_epoch, lambda e: f"stopped after epoch {e}")
    same_reason = compare("early stopping: reason", reasons,
                          lambda text: text.split(". Signaling")[0].replace(
                              "Monitored metric dev_loss did not improve in the last", "no better in"))
    last = {t: tmp_path / t / "checkpoints" / "last.ckpt" for t in TRAINERS}
    same_weights = all_weights_equal(last)
    record_parity("early stopping: final weights", {t: fingerprint(p) for t, p in last.items()}, same_weights)
    # save_total_limit=1 with load_best_model_at_end: the Trainer deletes every checkpoint but the best at the end
    tested = {t: best_checkpoint(tmp_path / t) for t in (*TRAINERS, HF_TRAINER)}
    same_tested = all_weights_equal(tested)
    record_parity("early stopping: the best checkpoint's weights", {t: fingerprint(p) for t, p in tested.items()},
                  same_tested)
    assert last_epoch["vanilla"] < 5 and same_epoch and same_reason and same_weights and same_tested


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
    extra = ("--auto-batch-size", mode, "--max-epochs", "1")
    searches = {}
    for trainer in ("vanilla", "fabric"):  # they print the sizes they tried
        train = load_train(trainer)
        monkeypatch.setattr(train, "seq2seq_loss", oom_above(40, [], lambda: False)(train.seq2seq_loss))
        run(trainer, tiny_data, tmp_path / trainer, *extra)
        found = re.search(r"tried \[([0-9, ]+)\] -> batch size (\d+)", capsys.readouterr().out)
        searches[trainer] = ([int(n) for n in found.group(1).split(", ")], int(found.group(2)))

    lightning_train = load_train("lightning")
    tried, state = [], {"searching": False}

    class Tuner(lightning_train.Tuner):
        def scale_batch_size(self, *args, **kwargs):
            state["searching"] = True
            try:
                return super().scale_batch_size(*args, **kwargs)
            finally:
                state["searching"] = False

    monkeypatch.setattr(lightning_train, "Tuner", Tuner)
    monkeypatch.setattr(loss_home("lightning"), "seq2seq_loss",
                        oom_above(40, tried, lambda: state["searching"])(loss_home("lightning").seq2seq_loss))
    run("lightning", tiny_data, tmp_path / "lightning", *extra)
    searches["lightning"] = (tried, int(re.search(r"-> batch size (\d+)", capsys.readouterr().out).group(1)))
    same = compare(f"batch-size search ({mode}, OOM above 40)", searches,
                   lambda r: f"{', '.join(map(str, r[0]))} -> {r[1]}")
    last = {t: tmp_path / t / "checkpoints" / "last.ckpt" for t in TRAINERS}
    same_weights = all_weights_equal(last)
    record_parity(f"  then 1 epoch at the found size ({mode})", {t: fingerprint(p) for t, p in last.items()},
                  same_weights)
    assert same and same_weights


def kill_after(trainer: str, step: int, tiny_data, out: Path, *extra: str) -> None:
    result = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", trainer, str(step),
                             *tiny_args(tiny_data, out, *extra)], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 3, result.stderr[-2000:]


def test_a_run_killed_mid_epoch_and_resumed_equals_the_others_uninterrupted_runs(tiny_data, tmp_path):
    """Killed (os._exit) after step 17, resumed from the step-15 checkpoint two batches into epoch 1 (the
    transformers Trainer's checkpoint-15/, with the epoch's starting generators, hf_trainer/mid_epoch_resume.py)."""
    extra = ("--checkpoint-every-n-steps", "5")
    for trainer in (*TRAINERS, HF_TRAINER):
        if trainer != HF_TRAINER:  # the Trainer's uninterrupted run is held equal to these by the other rows
            run(trainer, tiny_data, tmp_path / f"{trainer}-straight", *extra)
        resumed = tmp_path / f"{trainer}-resumed"
        kill_after(trainer, 17, tiny_data, resumed, *extra)
        if trainer == HF_TRAINER:
            assert max(int(p.name.split("-")[1]) for p in (resumed / "checkpoints").glob("checkpoint-*")) == 15
        else:
            assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 15
        run(trainer, tiny_data, resumed, *extra, "--resume", "last")
    results = {}
    for trainer in (*TRAINERS, HF_TRAINER):
        resumed = tmp_path / f"{trainer}-resumed"
        results[trainer] = all(weights_equal(last_checkpoint(resumed), last_checkpoint(tmp_path / f"{other}-straight"))
                               and (resumed / "metrics.csv").read_bytes()
                               == (tmp_path / f"{other}-straight" / "metrics.csv").read_bytes() for other in TRAINERS)
    record_parity("kill mid-epoch + --resume last, vs every uninterrupted run",
                  {t: "weights =, csv =" if same else "DIFFERENT" for t, same in results.items()},
                  all(results.values()))
    assert all(results.values())


def test_gradient_accumulation_gives_equal_weights(tiny_data, tmp_path):
    """`--accumulate-grad-batches 2` for one epoch of 13 batches: 6 steps of two batches and a last one of one batch,
    each batch's loss divided by 2 as Lightning divides it (hf_trainer/qg_trainer.py: the Trainer as shipped
    divides by nothing here, tests/test_hf_trainer.py)."""
    rungs = (*TRAINERS, HF_TRAINER)
    for trainer in rungs:
        run(trainer, tiny_data, tmp_path / trainer, "--accumulate-grad-batches", "2", "--max-epochs", "1")
    last = {t: last_checkpoint(tmp_path / t) for t in rungs}
    same = all_weights_equal(last)
    record_parity("accumulate 2 batches, 1 epoch: final weights", {t: fingerprint(p) for t, p in last.items()}, same)
    same_csv = compare("accumulate 2 batches: metrics.csv",
                       {t: (tmp_path / t / "metrics.csv").read_bytes() for t in rungs}, lambda b: f"{len(b)} bytes")
    assert same and same_csv


def test_bf16_mixed_gives_equal_weights(tiny_data, tmp_path):
    """Autocast to bfloat16 around the forward pass and the loss, in training, validation and the test phase's
    generation (hf_trainer: accelerate's autocast of the model's forward, and qg_trainer.py's around `generate`)."""
    extra = ("--precision", "bf16-mixed", "--max-epochs", "2")
    rungs = (*TRAINERS, HF_TRAINER)
    for trainer in rungs:
        run(trainer, tiny_data, tmp_path / trainer, *extra)
    last = {t: last_checkpoint(tmp_path / t) for t in rungs}
    same = all_weights_equal(last)
    record_parity("bf16-mixed, 2 epochs: final weights", {t: fingerprint(p) for t, p in last.items()}, same)
    files = compare("bf16-mixed: metrics.csv, predictions, test scores",
                    {t: [(tmp_path / t / name).read_text() for name in ("metrics.csv", "predictions.jsonl")]
                     + [scores(tmp_path / t)] for t in rungs}, lambda texts: f"{len(texts)} files")
    assert same and files


DDP_ARGS = ("--strategy", "ddp", "--devices", "2", "--max-epochs", "2", "--checkpoint-every-n-steps", "4")
DDP_ENV = dict(ENV, OMP_NUM_THREADS="1")  # one thread per rank: two ranks share two cores


def run_process(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=REPO, env=DDP_ENV, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def ddp_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """`--strategy ddp --devices 2` on the CPU (gloo), uninterrupted: each trainer starts its second process
    itself (vanilla by hand, Fabric's and Lightning's launchers theirs). 101 examples per rank: 7 batches."""
    runs = {}
    for trainer in TRAINERS:
        runs[trainer] = tmp_path_factory.mktemp(f"ddp-{trainer}")
        result = run_process(f"{trainer}/train.py", *tiny_args(tiny_data, runs[trainer], *DDP_ARGS, "--overwrite"))
        assert result.returncode == 0, result.stderr[-3000:]
    return runs


@pytest.fixture(scope="module")
def hf_ddp_run(tiny_data, tmp_path_factory) -> Path:
    """transformers' Trainer under torchrun, two processes (it starts none itself), with the flags of ddp_runs."""
    out = tmp_path_factory.mktemp("ddp-hf_trainer")
    result = run_process("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         f"{HF_TRAINER}/train.py", *tiny_args(tiny_data, out, *DDP_ARGS, "--overwrite"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_gives_equal_weights(ddp_runs, hf_ddp_run):
    runs = {**ddp_runs, HF_TRAINER: hf_ddp_run}
    last = {t: last_checkpoint(out) for t, out in runs.items()}
    assert load(last["lightning"])["global_step"] == 14 and last[HF_TRAINER].name == "checkpoint-14"
    assert len(load(last["lightning"])["callbacks"]["ExactResume"]["rng_states"]) == 2
    assert len(load(last["fabric"])["rng_states"]) == 2
    for out in runs.values():  # rank 0 alone writes files
        assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    same = all_weights_equal(last)
    record_parity("DDP, 2 CPU processes: final weights", {t: fingerprint(p) for t, p in last.items()}, same)
    files = compare("DDP: metrics.csv, predictions, test scores",
                    {t: [(out / "metrics.csv").read_text(), (out / "predictions.jsonl").read_text(), scores(out)]
                     for t, out in runs.items()}, lambda texts: f"{len(texts)} files")
    assert same and files


def free_port(low: int = 1024, high: int = 65535) -> int:
    for port in random.Random().sample(range(low, high), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in [{low}, {high})")


def run_together(commands: list[tuple[list[str], dict]], cwd: Path = REPO) -> list[subprocess.CompletedProcess]:
    """Start every (argv, extra environment) at once, as a launcher on each node would, and wait for all."""
    processes = [subprocess.Popen([sys.executable, *argv], cwd=cwd, env=dict(DDP_ENV, **extra), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv, extra in commands]
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def same_run_as_ddp_runs(out: Path, ddp_runs: dict[str, Path]) -> bool:
    """Weights, metrics.csv, predictions and test scores equal to every trainer's one-node, two-process run."""
    return all(weights_equal(out / "checkpoints" / "last.ckpt", other / "checkpoints" / "last.ckpt")
               and all((out / name).read_text() == (other / name).read_text()
                       for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"))
               for other in ddp_runs.values())


@pytest.mark.ddp
@pytest.mark.parametrize("trainer", TRAINERS)
def test_two_torchrun_nodes_on_the_loopback_equal_one_node(ddp_runs, tiny_data, tmp_path, trainer):
    """Two torchrun "nodes" on 127.0.0.1, one process each (`--num-nodes 2 --devices 1`): the run of each trainer
    equals the one-node, two-process runs of all three."""
    out, port = tmp_path / "two-nodes", free_port()
    args = tiny_args(tiny_data, out, *DDP_ARGS, "--overwrite", "--devices", "1", "--num-nodes", "2")
    nodes = run_together([(["-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                             "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                             f"{trainer}/train.py", *args], {}) for rank in (0, 1)])
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    same = same_run_as_ddp_runs(out, ddp_runs)
    record_parity(f"2 torchrun nodes x 1 process: {trainer}, vs every one-node DDP run",
                  {t: ("2 nodes: " if t == trainer else "") + fingerprint(
                      (out if t == trainer else ddp_runs[t]) / "checkpoints" / "last.ckpt") for t in TRAINERS}, same)
    assert same


def slurm_task(rank: int, job_id: str) -> dict:
    """What `srun` sets for task `rank` of a one-node, two-task job (`sbatch --nodes 1 --ntasks-per-node 2`)."""
    return {"SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "qg", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1", "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank)}


@pytest.mark.ddp
@pytest.mark.parametrize("trainer", TRAINERS)
def test_slurm_tasks_equal_the_self_launched_run(ddp_runs, tiny_data, tmp_path, trainer):
    """Two processes started with SLURM's variables, as `srun` starts them, and nothing else (no MASTER_ADDR or
    MASTER_PORT: the rendezvous comes from the node list and the job id): Lightning and Fabric detect SLURM
    themselves, vanilla reads the variables by hand. No --output-dir: the ranks agree on a new version directory.
    Each run equals every one-node DDP run."""
    job_id = str(free_port(15000, 25000) - 15000).zfill(4)  # the rendezvous port is 15000 + its last 4 digits
    args = tiny_args(tiny_data, tmp_path / "unused", *DDP_ARGS)
    del args[args.index("--output-dir"):args.index("--output-dir") + 2]
    assert not DDP_ENV.keys() & {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}  # srun's alone
    tasks = run_together([([str(REPO / trainer / "train.py"), *args], slurm_task(rank, job_id)) for rank in (0, 1)],
                         cwd=tmp_path)
    for task in tasks:
        assert task.returncode == 0, task.stderr[-3000:]
        # Lightning's requeue on SIGUSR1 stays off in the test phase's Trainer too: no trainer here requeues
        assert "auto-requeueing enabled" not in task.stderr
    out = tmp_path / "runs" / trainer / "version_0"
    assert [path.name for path in (tmp_path / "runs" / trainer).iterdir()] == ["version_0"]
    assert "on 2 cpu device(s)" in tasks[0].stdout and "testing " not in tasks[1].stdout
    same = same_run_as_ddp_runs(out, ddp_runs)
    record_parity(f"SLURM, 2 tasks: {trainer}, vs every one-node DDP run",
                  {t: ("SLURM: " if t == trainer else "") + fingerprint(
                      (out if t == trainer else ddp_runs[t]) / "checkpoints" / "last.ckpt") for t in TRAINERS}, same)
    assert same


@pytest.mark.ddp
@pytest.mark.parametrize("trainer", TRAINERS)
def test_ddp_killed_and_resumed_equals_the_uninterrupted_runs(ddp_runs, tiny_data, tmp_path, trainer):
    """Two ranks under torchrun, both killed (os._exit) after step 11; last.ckpt is the step-8 save, one batch
    into epoch 1. Resumed with the trainer's own launcher, the run ends where the uninterrupted ones end. With a
    loader worker per rank: a DistributedSampler must be set to the resumed epoch before the worker reads it.
    """
    resumed = tmp_path / f"{trainer}-resumed"
    args = (*DDP_ARGS, "--num-workers", "1")
    killed = run_process("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         "tests/helpers/interrupted_train.py", trainer, "11", *tiny_args(tiny_data, resumed, *args))
    assert killed.returncode != 0
    last = load(resumed / "checkpoints" / "last.ckpt")
    mid_epoch = last["callbacks"]["ExactResume"]["mid_epoch"] if trainer == "lightning" else \
        last["loop_state"]["batches_done"] == 1
    assert (last["global_step"], last["epoch"], mid_epoch) == (8, 1, True)
    result = run_process(f"{trainer}/train.py", *tiny_args(tiny_data, resumed, *args, "--resume", "last"))
    assert result.returncode == 0, result.stderr[-3000:]
    same = all(weights_equal(resumed / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")
               and all((resumed / name).read_text() == (out / name).read_text()
                       for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"))
               for out in ddp_runs.values())
    record_parity(f"DDP: {trainer} killed + --resume last, vs every uninterrupted run",
                  {t: ("resumed: " if t == trainer else "") + fingerprint(
                      (resumed if t == trainer else ddp_runs[t]) / "checkpoints" / "last.ckpt") for t in TRAINERS},
                  same)
    assert same


@pytest.mark.ddp
@pytest.mark.parametrize("trainer", TRAINERS)
def test_ddp_sigterm_to_every_process_and_resume_equal_the_uninterrupted_runs(ddp_runs, tiny_data, tmp_path, trainer):
    """A scheduler's SIGTERM to every process of a self-launched two-rank run during its second training batch:
    both ranks stop after step 2 with last.ckpt (exit 143); `--resume last` ends where the uninterrupted runs end."""
    resumed = tmp_path / f"{trainer}-sigterm"
    args = tiny_args(tiny_data, resumed, *DDP_ARGS)
    stopped = subprocess.run([sys.executable, "tests/helpers/signal_at_phase.py", trainer, "train", "all", *args],
                             cwd=REPO, env=DDP_ENV, capture_output=True, text=True, timeout=240,
                             start_new_session=True)  # its own process group: the signal reaches only the run
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 2
    result = run_process(f"{trainer}/train.py", *args, "--resume", "last")
    assert result.returncode == 0, result.stderr[-3000:]
    same = same_run_as_ddp_runs(resumed, ddp_runs)
    record_parity(f"DDP: {trainer} SIGTERM to every rank + --resume last, vs every uninterrupted run",
                  {t: ("resumed: " if t == trainer else "") + fingerprint(
                      (resumed if t == trainer else ddp_runs[t]) / "checkpoints" / "last.ckpt") for t in TRAINERS},
                  same)
    assert same


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


def test_optimizer_scheduler_and_callback_states_are_equal(trained_runs):
    """Beyond the weights: AdamW's moments and step counts, the warm-up scheduler's state, EarlyStopping's and
    ModelCheckpoint's bookkeeping (the keys Lightning saves; paths relative to each run). The loop state is
    each trainer's own format, as are the RNG states."""
    checkpoints = {t: load(out / "checkpoints" / "last.ckpt") for t, out in trained_runs.items()}
    optimizer = all(same_state(checkpoints["vanilla"]["optimizer_states"], c["optimizer_states"])
                    for c in checkpoints.values())
    moments = sum(len(state) for state in checkpoints["vanilla"]["optimizer_states"][0]["state"].values())
    record_parity("optimizer state (AdamW) in last.ckpt", dict.fromkeys(TRAINERS, f"{moments} tensors"), optimizer)
    scheduler = all(same_state(checkpoints["vanilla"]["lr_schedulers"], c["lr_schedulers"])
                    for c in checkpoints.values())
    shown = checkpoints["vanilla"]["lr_schedulers"][0]
    record_parity("LR scheduler state in last.ckpt",
                  dict.fromkeys(TRAINERS, f"step {shown['last_epoch']}, lr {shown['_last_lr'][0]:.2e}"), scheduler)
    callbacks = {}
    for name in ("EarlyStopping", "ModelCheckpoint"):
        lightning_state = callback_state(checkpoints["lightning"], name, trained_runs["lightning"])
        states = {t: {key: callback_state(checkpoints[t], name, trained_runs[t])[key] for key in lightning_state}
                  for t in TRAINERS}  # the keys Lightning saves
        callbacks[name] = all(same_state(states["vanilla"], state) for state in states.values())
        record_parity(f"{name} state in last.ckpt", {t: f"{len(state)} keys" for t, state in states.items()},
                      callbacks[name])
    assert optimizer and scheduler and all(callbacks.values())


def test_fine_tuning_a_pretrained_model_gives_equal_weights(trained_runs, tiny_data, tmp_path):
    """The path real users take: `--model DIR` (here the tiny run's own export, loaded with from_pretrained),
    5 steps of one epoch, then the test phase. from_pretrained returns a model in eval mode; every trainer must
    train it with dropout on (Lightning keeps each submodule's mode as it finds it)."""
    args = ["--data-dir", str(tiny_data), "--model", str(trained_runs["vanilla"] / "export"), "--batch-size", "16",
            "--max-epochs", "1", "--limit-train-batches", "5", "--lr", "3e-3", "--warmup-steps", "2",
            "--num-beams", "2", "--max-target-length", "16"]
    rungs = (*TRAINERS, HF_TRAINER)
    for trainer in rungs:
        load_train(trainer).main([*args, "--output-dir", str(tmp_path / trainer)])
    last = {t: last_checkpoint(tmp_path / t) for t in rungs}
    same = all_weights_equal(last)
    record_parity("fine-tuning --model DIR, 5 steps: final weights", {t: fingerprint(p) for t, p in last.items()},
                  same)
    files = compare("fine-tuning: predictions.jsonl, test scores",
                    {t: [(tmp_path / t / "predictions.jsonl").read_text(), scores(tmp_path / t)] for t in rungs},
                    lambda found: f"bleu_4 {found[1]['bleu_4']:.4f}")
    pretrained = model_weights(trained_runs["vanilla"] / "checkpoints" / "last.ckpt")
    moved = not all(torch.equal(tensor, pretrained[k]) for k, tensor in model_weights(last["vanilla"]).items())
    assert same and files and moved


def test_each_trainer_tests_the_others_checkpoints(trained_runs, tiny_data, tmp_path):
    """Checkpoints share Lightning's layout, so each trainer's test phase reads the others' best checkpoints and
    writes the predictions they wrote. Resuming another trainer's checkpoint is refused in one line: the loop
    state (position, loader, RNG) is each trainer's own."""
    import pytorch_lightning as pl_
    from lightning_fabric import Fabric

    from shared.cli import parse_args
    from shared.pipeline import make_model, prepare_data
    from shared.predictions import write_test_report
    from vanilla.evaluation_loop import run_test
    from vanilla.precision import Precision

    args = parse_args("parity", "parity", tiny_args(tiny_data, tmp_path / "unused"))
    data = prepare_data(args, tmp_path, save_tokenizer=False)
    best = {name: out / "checkpoints" / json.loads((out / "test_metrics.json").read_text())["checkpoint"]
            for name, out in trained_runs.items()}
    lightning_train, fabric_train = load_train("lightning"), load_train("fabric")

    def test_with(tester: str, checkpoint: Path, out: Path) -> None:
        out.mkdir()
        model = make_model(args, data.tokenizer)
        if tester == "vanilla":
            run_test(model, data.tokenizer, data.test, str(checkpoint), torch.device("cpu"),
                     Precision("32-true", "cpu"), args.batch_size, args.num_beams, args.max_target_length, out)
        elif tester == "lightning":
            module = lightning_train.QGModule(model, data.tokenizer, dict(vars(args)))
            trainer = pl_.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                  enable_model_summary=False, default_root_dir=tmp_path)
            trainer.test(module, datamodule=lightning_train.QGDataModule(data, args.batch_size, 0),
                         ckpt_path=checkpoint, weights_only=True, verbose=False)
            write_test_report(out, data.test.examples, sum(module.generated, []), str(checkpoint))
        else:
            fabric = Fabric(accelerator="cpu", devices=1)
            job = fabric_train.Job(fabric, fabric.setup(model), model, None, None, args)
            fabric_train.test_phase(job, data, str(checkpoint), out)

    results = {}
    for tester in TRAINERS:
        readings = []
        for writer in TRAINERS:
            if writer != tester:
                test_with(tester, best[writer], tmp_path / f"{tester}-tests-{writer}")
                readings.append((tmp_path / f"{tester}-tests-{writer}" / "predictions.jsonl").read_bytes()
                                == (trained_runs[writer] / "predictions.jsonl").read_bytes())
        results[tester] = all(readings)
    record_parity("cross-loading: test the others' best checkpoints",
                  {t: "same predictions" if same else "DIFFERENT predictions" for t, same in results.items()},
                  all(results.values()))

    refusals = {}
    for trainer in TRAINERS:
        refused = []
        for other in TRAINERS:
            if other != trainer:
                with pytest.raises(UserError) as error:
                    run(trainer, tiny_data, tmp_path / f"{trainer}-resumes-{other}", "--resume",
                        str(trained_runs[other] / "checkpoints" / "last.ckpt"))
                refused.append(f"was written by {other}/train.py" in str(error.value) and "\n" not in str(error.value))
        refusals[trainer] = all(refused)
    record_parity("cross-loading: resume the others' checkpoints",
                  {t: "refused in one line" if ok else "NOT refused" for t, ok in refusals.items()},
                  all(refusals.values()))
    assert all(results.values()) and all(refusals.values())
