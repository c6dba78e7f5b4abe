"""Instrumented runs for the benchmarks: the bare loop (the floor), the hand-written trainer, the Fabric trainer,
Lightning with its defaults, Lightning's own floor (`Trainer(barebones=True)`), Lightning as lightning/train.py
configures it, and the transformers Trainer as hf_trainer/train.py configures it, each timed per training step
from inside the run.

A step is timed from one batch's arrival at the training step to the next's: data loading, forward, backward,
gradient clipping, optimizer and schedule step and every per-step feature (progress bar, logging, callbacks) fall
inside; start-up, the sanity check, validation, the test phase and the export fall outside and are timed on their
own where they matter. The probes themselves (two clock reads per step) cost well under a microsecond.

Every variant does the same arithmetic: the same model, data order, AdamW, warm-up schedule and gradient clipping
(tests/test_like_for_like.py checks their weights after the same steps are equal).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.rungs import TIMED_RUNGS
from shared.data import LABEL_PAD
from shared.model import seq2seq_loss

REPO = Path(__file__).resolve().parents[1]

WARMUP_STEPS = 3  # the first steps pay for allocator growth and lazy initialisation


@dataclass
class StepLog:
    """When each training batch arrived (wall clock, and this thread's CPU time), its size and its number of target
    tokens; validation time; the model being trained."""

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list = field(default_factory=list)  # tensors: on a GPU, reading them at each step would be a sync
    validation_seconds: list[float] = field(default_factory=list)
    validation_samples: int = 0
    model: torch.nn.Module | None = None

    def step(self, batch: dict, model: torch.nn.Module | None = None) -> None:
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.thread_time())
        self.model = model if model is not None else self.model
        self.samples.append(int(batch["input_ids"].size(0)))
        self.tokens.append((batch["labels"] != LABEL_PAD).sum())

    def intervals(self) -> list[float]:
        t = self.times[WARMUP_STEPS:]
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    def weights(self) -> dict[str, torch.Tensor]:
        """The trained model's weights as the run left them."""
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    def summary(self) -> dict:
        t = self.times[WARMUP_STEPS:]
        span = t[-1] - t[0]  # from the first timed batch's arrival to the last one's: the batches in between
        return {
            "ms_per_step": 1000 * statistics.median(self.intervals()),
            "samples_per_s": sum(self.samples[WARMUP_STEPS:-1]) / span,
            "target_tokens_per_s": sum(int(n) for n in self.tokens[WARMUP_STEPS:-1]) / span,
            "steps_timed": len(t) - 1,
            **({"validation_samples_per_s": self.validation_samples / statistics.median(self.validation_seconds)}
               if self.validation_seconds else {}),
        }


def bare_loop(args, steps: int, collate_class=None, log: StepLog | None = None) -> StepLog:
    """The floor: forward, backward, gradient clipping, optimizer step and schedule step, nothing else (the same
    data, model, optimizer, schedule, clipping and batch size as the trainers)."""
    from torch.utils.data import DataLoader
    from transformers import get_constant_schedule_with_warmup

    from shared.data import PadCollator
    from shared.pipeline import make_model, prepare_data

    torch.manual_seed(args.seed)
    data = prepare_data(args, Path(args.output_dir), save_tokenizer=False)
    device = torch.device("cuda" if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu")
    model = make_model(args, data.tokenizer).to(device).train()
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup_steps)
    loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True,
                        collate_fn=(collate_class or PadCollator)(data.tokenizer.pad_token_id))
    log = StepLog() if log is None else log
    autocast = torch.autocast("cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16,
                              enabled=args.precision == "bf16-mixed")
    for batch in loader:
        if len(log.times) == steps:
            break
        log.step(batch, model)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # as the trainers copy it
        with autocast:
            loss = seq2seq_loss(model, batch)
        loss.backward()
        if args.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(parameters, args.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    return log


def interleaved(runs: dict[str, Callable[[], StepLog]]) -> tuple[dict[str, list[StepLog]], Callable[[], None]]:
    """Each variant's logs, and one round: every variant once, the order rotating from round to round so that no
    variant always runs first or last (this machine's speed drifts)."""
    logs: dict[str, list[StepLog]] = {name: [] for name in runs}
    order = list(runs)

    def one_round() -> None:
        for name in order:
            logs[name].append(runs[name]())
        order.append(order.pop(0))

    return logs, one_round


@contextmanager
def patched(owner, name: str, make_wrapper):
    original = getattr(owner, name)
    setattr(owner, name, make_wrapper(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def vanilla_trainer(argv: list[str], switched_off=(), log: StepLog | None = None) -> StepLog:
    """vanilla/train.py's main, with a probe on FitLoop.training_step and FitLoop.validate."""
    from vanilla import train
    from vanilla.fit_loop import FitLoop

    log = StepLog() if log is None else log

    def training_step(original):
        def step(self, batch, batch_idx, num_batches):
            log.step(batch, self.optimization.model)
            return original(self, batch, batch_idx, num_batches)
        return step

    def validate(original):
        def run(self, max_batches=None):
            started = time.perf_counter()
            result = original(self, max_batches)
            if max_batches is None:  # not the sanity check
                log.validation_seconds.append(time.perf_counter() - started)
                log.validation_samples = len(self.val_loader.dataset)
            return result
        return run

    with patched(FitLoop, "training_step", training_step), patched(FitLoop, "validate", validate), \
            ExitStack() as stack:
        for switch in switched_off:
            stack.enter_context(switch(train))
        train.main(argv)
    return log


def _probe_callback(log: StepLog):
    from pytorch_lightning import Callback

    class Probe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            log.step(batch, pl_module.model)

        def on_validation_epoch_start(self, trainer, pl_module):
            self.started = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                log.validation_seconds.append(time.perf_counter() - self.started)
                log.validation_samples = len(trainer.datamodule.data.dev)

    return Probe()


_LIGHTNING_RUNS: dict[int, tuple] = {}  # thread ident -> (extra callbacks, settings, the Trainers built)
_TRAINER_PATCH = {"users": 0, "original": None}
_TRAINER_PATCH_LOCK = threading.Lock()


@contextmanager
def _trainer_patched():
    """`pl.Trainer` replaced by a subclass that applies the settings registered for the thread building it; the
    first user installs it, the last one takes it away (runs interleaved in threads share it)."""
    import pytorch_lightning as pl

    with _TRAINER_PATCH_LOCK:
        if not _TRAINER_PATCH["users"]:
            original = _TRAINER_PATCH["original"] = pl.Trainer

            class Trainer(original):
                def __init__(self, *args, **kwargs):
                    run = _LIGHTNING_RUNS.get(threading.get_ident())
                    if run and "callbacks" in kwargs and "use_distributed_sampler" not in kwargs:  # the fit Trainer
                        extra_callbacks, chosen, _ = run
                        chosen = dict(chosen)
                        kwargs["callbacks"] = [*kwargs["callbacks"], *chosen.pop("callbacks", []), *extra_callbacks]
                        kwargs.update(chosen)
                    super().__init__(*args, **kwargs)
                    if run:
                        run[2].append(self)

            pl.Trainer = Trainer
        _TRAINER_PATCH["users"] += 1
    try:
        yield
    finally:
        with _TRAINER_PATCH_LOCK:
            _TRAINER_PATCH["users"] -= 1
            if not _TRAINER_PATCH["users"]:
                pl.Trainer = _TRAINER_PATCH["original"]


@contextmanager
def lightning_trainers(extra_callbacks=(), settings: dict | None = None):
    """While it lasts, every `pl.Trainer(callbacks=...)` built in this thread (by lightning/train.py: the fit
    Trainer, not the tester) gets `extra_callbacks` too, and `settings` in place of its own keyword arguments
    (`callbacks` there: added to its own); yields the Trainers built."""
    built: list = []
    with _trainer_patched():
        _LIGHTNING_RUNS[threading.get_ident()] = (tuple(extra_callbacks), dict(settings or {}), built)
        try:
            yield built
        finally:
            del _LIGHTNING_RUNS[threading.get_ident()]


def lightning_trainer(argv: list[str], settings: dict | None = None, switched_off=(),
                      log: StepLog | None = None) -> StepLog:
    """lightning/train.py's main, with a probe callback added to the Trainer it builds for fit (and `settings`
    for that Trainer; `switched_off`: context managers that take parts away, see bench/test_anatomy.py)."""
    from tests.conftest import load_lightning_train

    train = load_lightning_train()
    log = StepLog() if log is None else log
    with lightning_trainers([_probe_callback(log)], settings), ExitStack() as stack:
        for switch in switched_off:
            stack.enter_context(switch(train))
        train.main(argv)
    return log


def fabric_trainer(argv: list[str], switched_off=(), log: StepLog | None = None) -> StepLog:
    """fabric/train.py's main, with probes on its training step and validation."""
    from tests.conftest import load_train

    train = load_train("fabric")
    log = StepLog() if log is None else log

    def training_step(original):
        def step(job, batch, batch_idx, num_batches):
            log.step(batch, job.raw_model)
            return original(job, batch, batch_idx, num_batches)
        return step

    def validate(original):
        def run(job, val_loader):
            started = time.perf_counter()
            result = original(job, val_loader)
            log.validation_seconds.append(time.perf_counter() - started)
            log.validation_samples = len(val_loader.dataset)
            return result
        return run

    with patched(train, "training_step", training_step), patched(train, "validate", validate), ExitStack() as stack:
        for switch in switched_off:
            stack.enter_context(switch(train))
        train.main(argv)
    return log


def hf_trainer(argv: list[str], log: StepLog | None = None) -> StepLog:
    """hf_trainer/train.py's main, so that its QGTrainer runs as the rung builds it (its `training_arguments`: AdamW
    from `create_optimizer`, `constant_with_warmup`, `max_grad_norm` = --gradient-clip-val; its callbacks), with a
    probe on `QGTrainer.training_step` (a subclass put in train.py's place for the run: one call per step).

    The Trainer owns its loop, so the probe sits where the loop hands a batch to the step: it fetches a group of
    `gradient_accumulation_steps` batches, dispatches `on_step_begin`, then calls `training_step` once per batch.
    With one batch per optimizer step (`--accumulate-grad-batches 1`, as every benchmark runs) one arrival there to
    the next is one whole optimizer step of the loop, the same span as the other rungs' windows: `training_step`
    (forward with QGTrainer's `compute_loss`, which also updates the epoch's train_loss metric, and backward), the
    Trainer's NaN/inf check of the step's loss (`logging_nan_inf_filter`), its FLOP count, clipping, the optimizer
    and schedule steps, `zero_grad`, `on_pre_optimizer_step`, `on_optimizer_step` and `on_step_end` (the progress
    bar and the job's callbacks: early stopping, metrics files, step checkpoints, the per-epoch batch limit),
    `_maybe_log_save_evaluate` (nothing at a step inside an epoch: logging is off, evaluation and saving come per
    epoch), the next batch's loading and its `on_step_begin`. With accumulation, a window would be one batch.
    Its Python calls include two look-ups per step of an optional package that is not installed (accelerate's
    `AcceleratedOptimizer.step` calls `is_lomo_available()`, an `importlib.util.find_spec`, twice; a miss is not
    cached), whose cost grows with the entries of `sys.path` and the import hooks installed: equal in two runs of
    one process, but not across processes set up otherwise (under pytest after the other rungs, as
    bench/test_counts.py counts it, more than in a script that runs the Trainer alone).

    Timed in turns with the other rungs on the CPU (RUNGS) and counted (bench/test_counts.py); not in the whole runs
    of bench/test_overhead.py. Not on a GPU, which hf_trainer/train.py refuses so far (HF_TRAINER_RUNS)."""
    from tests.conftest import load_train

    train = load_train("hf_trainer")
    log = StepLog() if log is None else log

    def probed(original):
        class Probed(original):
            def training_step(self, model, inputs, num_items_in_batch=None):
                log.step(inputs, self.model)
                return super().training_step(model, inputs, num_items_in_batch)
        return Probed

    with patched(train, "QGTrainer", probed):
        train.main(argv)
    return log


def lightning_defaults(args, steps: int, log: StepLog | None = None, **trainer_flags) -> StepLog:
    """`pl.Trainer()` with its defaults (progress bar, model summary, default checkpointing and logger) on the
    same LightningModule and DataModule, for the same number of steps, clipping gradients as the job does;
    `trainer_flags`: other settings (`barebones=True`: Lightning's floor)."""
    import pytorch_lightning as pl

    from shared.pipeline import make_model, prepare_data
    from tests.conftest import load_lightning_train

    train = load_lightning_train()
    pl.seed_everything(args.seed, verbose=False)
    data = prepare_data(args, Path(args.output_dir), save_tokenizer=False)
    module = train.QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    log = StepLog() if log is None else log
    trainer = pl.Trainer(max_steps=steps, callbacks=[_probe_callback(log)], default_root_dir=args.output_dir,
                         gradient_clip_val=args.gradient_clip_val or None, **trainer_flags)
    trainer.fit(module, datamodule=train.QGDataModule(data, args.batch_size, args.num_workers))
    return log


def lightning_barebones(args, steps: int, log: StepLog | None = None) -> StepLog:
    """Lightning's floor: `Trainer(barebones=True)`, which turns off every feature that costs time (logging, the
    progress bar, checkpointing, the model summary, the sanity check; `self.log` returns at once), on the same
    module, data, clipping and schedule."""
    return lightning_defaults(args, steps, log, barebones=True)


HF_TRAINER_RUNS = not torch.cuda.is_available()  # hf_trainer/train.py refuses a GPU so far: the CPU only


def on_this_machine(rungs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(rung for rung in rungs if rung != "hf_trainer" or HF_TRAINER_RUNS)


RUNGS = on_this_machine(TIMED_RUNGS)  # the rungs timed in turns


def rung_runs(argv_for: Callable[[str], list[str]], steps: int) -> dict[str, Callable[[StepLog], StepLog]]:
    """Each rung's run, `run(log)`, for `steps` steps, on the command line `argv_for(rung)` (a directory of its
    own each, so that they can run side by side): the bare loop, the hand-written trainer, Fabric, Lightning's
    floor, Lightning as configured and tuned, the transformers Trainer (RUNGS: those this machine runs)."""
    from shared.cli import parse_args

    def args(rung: str):
        return parse_args("bench", "unused", argv_for(rung))

    runs = {"bare loop": lambda log: bare_loop(args("bare loop"), steps, log=log),
            "vanilla": lambda log: vanilla_trainer(argv_for("vanilla"), log=log),
            "fabric": lambda log: fabric_trainer(argv_for("fabric"), log=log),
            "lightning (barebones)": lambda log: lightning_barebones(args("lightning (barebones)"), steps, log),
            "lightning (as configured)": lambda log: lightning_trainer(argv_for("lightning (as configured)"), log=log),
            "lightning (tuned)": lambda log: lightning_trainer(argv_for("lightning (tuned)"), tuned_settings(),
                                                              log=log),
            "hf_trainer": lambda log: hf_trainer(argv_for("hf_trainer"), log)}
    return {rung: runs[rung] for rung in RUNGS}


TUNED_SETTINGS = "enable_progress_bar=False"  # as the report names them


def tuned_settings() -> dict:
    """"Lightning, tuned": the fastest Trainer settings for lightning/train.py that keep the job's results (the same
    checkpoints, early stopping, metrics files and predictions), from bench/test_tuning.py, which times each setting
    a user can change: without the progress bar, the setting the first quick run found fastest. Of the full runs
    since (bench/results.md's tuning table, ms per step saved against as configured), none found another setting
    faster in two runs: a TQDMProgressBar redrawn every 20 steps +0.07 ± 0.04 and -0.13 ± 0.11 against the bar off's
    +0.06 ± 0.04 and +0.21 ± 0.11; the bar off with `log_every_n_steps=1000` +0.16 ± 0.04 and +0.09 ± 0.09 (the
    third and fourth runs, 2026-12-06)."""
    return {"enable_progress_bar": False}


def profiled_lightning(argv: list[str], steps: int, top: int = 14) -> list[tuple[str, float]]:
    """Lightning's SimpleProfiler on lightning/train.py: the per-step actions (those recorded at least once per
    step) and their ms per step, the costliest first."""
    from pytorch_lightning.profilers import SimpleProfiler

    profiler = SimpleProfiler()
    lightning_trainer(argv, {"profiler": profiler})
    rows = [(action, 1000 * sum(durations) / steps) for action, durations in profiler.recorded_durations.items()
            if len(durations) >= steps - 1]
    return sorted(rows, key=lambda row: -row[1])[:top]


class ProfiledSteps(StepLog):
    """A StepLog that runs cProfile over the timed steps alone: from the first timed batch's arrival (after the
    warm-up) to the last batch's arrival, the intervals StepLog.intervals() times."""

    def __init__(self, steps: int):
        super().__init__()
        self.last, self.profile = steps, cProfile.Profile()

    def step(self, batch: dict, model=None) -> None:
        if len(self.times) == self.last - 1:
            self.profile.disable()
        super().step(batch, model)
        if len(self.times) == WARMUP_STEPS + 1:
            self.profile.enable()

    def own_time_by_area(self) -> dict[str, float]:
        """ms per timed step spent in each area's own Python code (a function's own time, without what it calls),
        for the frameworks' and this repository's code; torch's Python code and C functions are left out (they
        run in every trainer alike, the bare loop included)."""
        steps = len(self.intervals())
        areas: dict[str, float] = {}
        for (filename, _, _), (_, _, own, _, _) in pstats.Stats(self.profile).stats.items():
            area = code_area(filename)
            if area is not None:
                areas[area] = areas.get(area, 0.0) + 1000 * own / steps
        return dict(sorted(areas.items(), key=lambda item: -item[1]))


def code_area(filename: str) -> str | None:
    """Where a function's code lives: pytorch_lightning/loops/optimization, pytorch_lightning/trainer/call.py, ...,
    torchmetrics, tqdm, rich, or a file of this repository (vanilla/fit_loop.py, ...); None for torch, the
    standard library and C functions."""
    path = Path(filename)
    for package in ("pytorch_lightning", "lightning_fabric"):
        if package in path.parts:  # its directories, up to three deep; the file too if fewer than two
            *directories, file = path.parts[path.parts.index(package) + 1:]
            return "/".join((package, *directories[:3], *([file] if len(directories) < 2 else [])))
    for package in ("torchmetrics", "tqdm", "rich"):
        if package in path.parts:
            return package
    if path.is_absolute() and REPO in path.parents and ".venv" not in path.parts:
        return str(path.relative_to(REPO))
    return None


def profiled_own_time(run: Callable[[StepLog], StepLog], steps: int) -> dict[str, float]:
    """`run(log)` (a trainer runner given a ProfiledSteps as its log): each code area's own time per step."""
    log = ProfiledSteps(steps)
    run(log)
    return log.own_time_by_area()
