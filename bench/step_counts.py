"""Exact counts per training step: the Python function calls a trainer makes, and the points where it makes the
host wait for the device.

On a GPU the host queues kernels and the device runs them later, so a trainer's host time per step is hidden while
the device has more work queued than the host takes to queue it, unless the host stops to wait. It waits wherever
a tensor becomes a Python value: `.item()`, `.tolist()`, `bool(tensor)` (an `if` on a tensor), `float()`, `int()`,
`format()`, `.cpu()`, `.numpy()`. A trainer makes these calls on the CPU too, where they cost nothing; here they
are counted by replacing those methods of `torch.Tensor` for the counted steps, with the code that made each (the
first frame outside torch). A conversion made inside another (`format()` calls `.item()`) counts once. What this
cannot see: a sync inside a C++ operator (an output whose size depends on the data: `nonzero`, boolean indexing)
and a blocking copy between host and device (`.to(device)` without `non_blocking`: the trainers and the bare loop
copy their batches with it); `make gpu-check` counts every sync on CUDA with `torch.cuda.set_sync_debug_mode`, the
cross-check of these counts.

Python calls are sys.setprofile's "call" events in the training thread (a Python function entered or a generator
resumed), by where the function's code lives. C functions are not counted.

Both are exact: the same code path gives the same counts, and bench/test_counts.py runs each variant twice and
requires equal tables. The probe's own calls are included, its work is not: one wrapper call per step in the
bare loop, vanilla, Fabric and the transformers Trainer (hf_trainer: an override of `training_step`); in Lightning
its callback, called through the Trainer's hook dispatch (a dozen calls that any callback costs).
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import weakref
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.runners import WARMUP_STEPS, StepLog, code_area

SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__format__", "cpu", "numpy")
TORCH_DIR = str(Path(torch.__file__).parent) + "/"  # the slash: not torchmetrics
HERE = __file__


# Conversions of tensors that a GPU run keeps on the CPU too (no sync there): the optimizer's step counters, which
# torch keeps on the CPU unless the optimizer is `capturable` or `fused` (torch/optim/optimizer.py `_get_value`)
HOST_SIDE = {("optim/optimizer.py", "_get_value"): "the optimizer's step counter, kept on the CPU"}


def shown_path(filename: str) -> str:
    """A code file as the tables show it: from its package (pytorch_lightning/..., transformers/...) or from the
    repository root."""
    path = Path(filename)
    package = next((p for p in ("pytorch_lightning", "lightning_fabric", "torchmetrics", "tqdm", "rich",
                                "transformers", "accelerate", "torch") if p in path.parts), None)
    if package is not None:
        return str(Path(*path.parts[path.parts.index(package):]))
    return str(path.relative_to(code_root())) if code_root() in path.parents else path.name


def where(frame) -> str:
    """The code that made a call: the first frame outside torch and this file, as `path:line (function)`."""
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH_DIR) or frame.f_code.co_filename == HERE):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{shown_path(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"


def host_side(frame) -> str | None:
    """Why a conversion made in `frame` is no sync on a GPU, if it is one of HOST_SIDE's."""
    filename = frame.f_code.co_filename
    if filename.startswith(TORCH_DIR):
        return HOST_SIDE.get((filename[len(TORCH_DIR):], frame.f_code.co_name))
    return None


def call_area(filename: str) -> str:
    """Where a counted call's code lives: bench/runners.py `code_area` (the Lightning packages' areas, torchmetrics,
    tqdm, rich, this repository's files), then torch, then transformers and accelerate by their top-level module or
    folder (transformers/trainer.py, transformers/trainer_callback.py, transformers/models, accelerate/utils, ...:
    the transformers Trainer's own code apart from the model's, which every rung runs), then the rest."""
    area = code_area(filename)
    if area is not None:
        return area
    if filename.startswith(TORCH_DIR):
        return "torch"
    path = Path(filename)
    for package in ("transformers", "accelerate"):
        if package in path.parts:
            return f"{package}/{path.parts[path.parts.index(package) + 1]}"
    return "other (standard library, ...)"


def code_root() -> Path:
    return Path(HERE).resolve().parents[1]


class SyncCounter:
    """While `counting`, each conversion of a tensor to a Python value made in the owner's thread, by kind and by
    the code making it: `syncs` those that make the host wait for the device in a GPU run, `host_side` the others."""

    def __init__(self):
        self.syncs: Counter[tuple[str, str]] = Counter()
        self.host_side: Counter[tuple[str, str]] = Counter()
        self.counting = False
        self._thread = threading.get_ident()
        self._depth = 0
        self._on_host = weakref.WeakValueDictionary()  # id -> what `.cpu()` returned: on the host already

    @contextmanager
    def installed(self):
        originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        own = {name for name in SYNC_METHODS if name in vars(torch.Tensor)}  # the others are inherited
        for name, original in originals.items():
            setattr(torch.Tensor, name, self._wrap(name, original))
        try:
            yield self
        finally:
            for name, original in originals.items():
                if name in own:
                    setattr(torch.Tensor, name, original)
                else:
                    delattr(torch.Tensor, name)

    def _wrap(self, name, original):
        kind = f"{name.strip('_')}()"

        @functools.wraps(original)
        def counted(tensor, *args, **kwargs):
            if self._depth or not self.counting or threading.get_ident() != self._thread:
                return original(tensor, *args, **kwargs)
            caller = sys._getframe(1)
            reason = "a copy on the host already" if self._on_host.get(id(tensor)) is tensor else host_side(caller)
            if reason:
                self.host_side[(kind, f"{where(caller)}: {reason}")] += 1
            else:
                self.syncs[(kind, where(caller))] += 1
            self._depth += 1
            try:
                result = original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1
            if name == "cpu":  # on the CPU the tensor itself; a copy, as on a GPU, whose conversions are no syncs
                result = result.clone() if result is tensor else result
                self._on_host[id(result)] = result
            return result

        return counted


class CallCounter:
    """While `counting`, each Python function call in this thread, by where its code lives (`call_area`: the
    frameworks' package areas and this repository's files; torch, transformers, accelerate, the standard library and
    the rest by name). Left out: tqdm's redraws from its own `update`, which come when 0.1 s of wall time has passed
    (its `mininterval`), not at a step count; a redraw the trainer asks for is counted."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self._by_file: dict[str, str] = {}
        self._paused_in = None  # the frame of a time-driven tqdm redraw, while it runs

    def _profile(self, frame, event, arg):
        if self._paused_in is not None:
            if event == "return" and frame is self._paused_in:
                self._paused_in = None
            return
        if event != "call":
            return
        code = frame.f_code
        if code.co_name in ("refresh", "__call__", "_ema_dn", "_ema_dt") and frame.f_back is not None \
                and frame.f_back.f_code.co_name == "update" and "tqdm" in Path(code.co_filename).parts:
            self._paused_in = frame
            return
        area = self._by_file.get(code.co_filename)
        if area is None:
            area = self._by_file[code.co_filename] = call_area(code.co_filename)
        self.counts[area] += 1

    @property
    def counting(self) -> bool:
        return sys.getprofile() == self._profile

    @counting.setter
    def counting(self, on: bool) -> None:
        sys.setprofile(self._profile if on else None)


class CountedSteps(StepLog):
    """A StepLog that counts over `steps` steps after the warm-up, from one batch's arrival to the arrival of the
    batch `steps` later, leaving out its own work at each arrival."""

    def __init__(self, counter, steps: int):
        super().__init__()
        self.counter, self.counted_steps = counter, steps

    def step(self, batch: dict, model=None) -> None:
        self.counter.counting = False
        super().step(batch, model)
        if len(self.times) == WARMUP_STEPS + 1:
            # the garbage collector runs after so many allocations since its last run: from a collection here, its
            # runs (and the __del__ and weakref callbacks they call) fall at the same steps in every run (one full
            # make bench counted 6 calls more in 50 steps of one of two runs of Lightning's floor without it)
            gc.collect()
            gc.disable()  # and none inside the counted steps (a CI run once counted 1 call more in 5 steps)
        self.counter.counting = WARMUP_STEPS < len(self.times) <= WARMUP_STEPS + self.counted_steps
        if len(self.times) == WARMUP_STEPS + self.counted_steps + 1:
            gc.enable()


def per_step(counts: Counter, steps: int) -> dict[str, float]:
    return {f"{kind} at {code}": n / steps for (kind, code), n in sorted(counts.items())}


def count_syncs(run, steps: int) -> dict:
    """`run(log)`, a runner given the log: its syncs per step, in all, by kind, and by kind and code; and the
    conversions that are no sync on a GPU."""
    counter = SyncCounter()
    try:
        with counter.installed():
            run(CountedSteps(counter, steps))
    finally:
        gc.enable()  # where the run ended inside the counted steps
    by_kind: Counter[str] = Counter()
    for (kind, _), n in counter.syncs.items():
        by_kind[kind] += n
    return {"total": sum(by_kind.values()) / steps, "by_kind": {k: n / steps for k, n in sorted(by_kind.items())},
            "by_code": per_step(counter.syncs, steps), "host_side": per_step(counter.host_side, steps)}


def count_calls(run, steps: int) -> dict:
    """`run(log)`: its Python function calls per step, in all and by code area."""
    counter = CallCounter()
    try:
        run(CountedSteps(counter, steps))
    finally:
        counter.counting = False
        gc.enable()  # where the run ended inside the counted steps
    return {"total": sum(counter.counts.values()) / steps,
            "by_area": {area: n / steps for area, n in counter.counts.most_common()}}
