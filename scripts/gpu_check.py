"""`make gpu-check`: on one NVIDIA GPU, in at most eight minutes, what the CPU test suite cannot check; the
measurements go to docs/gpu.md.

(a) determinism: the three trainers on CUDA in float32 with deterministic algorithms; their final weights
    (checkpoints/last.ckpt) compared bit for bit;
(b) mixed precision: 16-mixed (with its GradScaler) and bf16-mixed runs of each trainer finish; whether the three
    agree is reported, not required (GPU kernels need not match across the trainers' call orders);
(c) the batch-size search driven by a real CUDA out-of-memory (a per-process memory cap reaches it quickly), in
    16-mixed: the sizes each trainer tried;
(d) `--strategy dp` over the GPUs present, and the dtype DataParallel's replica threads compute in under
    bf16-mixed (vanilla/data_parallel.py);
(e) tokens per second and model FLOPs utilisation (MFU) of the default model and of a bart-base-sized one in
    bf16-mixed;
(f) the CPU benchmarks' prediction checked: each rung's syncs per step counted as on the CPU (bench/step_counts.py)
    and by CUDA itself (`torch.cuda.set_sync_debug_mode`), and its wall and host time per step over the bare loop
    with the rungs in turns (bench/step_by_step.py), at the fixed-cost configuration (tiny model, batch 1).

Each trainer runs as a subprocess through this script's runner mode (`--run-trainer`), which turns on
deterministic algorithms (and the memory cap for (c)) and then runs the trainer's own `__main__`, so the trainers
stay as they are. The runs of a section share the GPU at the same time (none of them is timed); every run has a
timeout, and sections that no longer fit in the budget are skipped with a line saying so. Exit status 0 when every
check passed, 1 otherwise (docs/gpu.md says which). Without a CUDA GPU the script says so in one line, exits 0 and
writes nothing.

    python scripts/gpu_check.py
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "gpu.md"
TRAINERS = ("vanilla", "fabric", "lightning")
BUDGET_S = 8 * 60 - 30  # the whole check, less a margin for writing the report
RUN_TIMEOUT_S = 180  # one trainer run
ACCELERATOR, DEVICE = "gpu", "cuda"
NO_GPU = "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing measured"
NONDETERMINISTIC = "does not have a deterministic implementation"
# Dense bfloat16 peak of one GPU (NVIDIA's datasheets), by a part of its name, the first that matches: the PCIe and
# NVL parts by their own names; a plain "H100" or "H200" (the SXM boards name themselves so) taken as SXM, said so.
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12, "H100 PCIe"), ("H100 NVL", 835e12, "H100 NVL"),
                   ("H200 NVL", 835e12, "H200 NVL"), ("H100", 989e12, "H100 SXM, assumed from the name"),
                   ("H200", 989e12, "H200 SXM, assumed from the name"), ("A100", 312e12, "A100"))
SOURCE_TOKENS, TARGET_TOKENS = 256, 32  # the command line's --max-source-length and --max-target-length
BART_BASE = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)


# ---------------------------------------------------------------- runner mode: one trainer, in this process
def run_trainer(name: str, memory_fraction: float, trainer_args: list[str]) -> None:
    """The trainer's `python NAME/train.py ARGS`, after what it cannot be told on its command line. Nondeterministic
    kernels warn rather than fail, so that a run still finishes and the report can name them."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    if memory_fraction:
        torch.cuda.set_per_process_memory_fraction(memory_fraction)
    path = REPO / name / "train.py"
    sys.argv = [str(path), *trainer_args]
    sys.path[0] = str(path.parent)  # as when it is run as a script: it puts the repository root there itself
    runpy.run_path(str(path), run_name="__main__")


# ---------------------------------------------------------------- running and reading the trainers
class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclass
class Run:
    label: str
    trainer: str
    output_dir: Path
    returncode: int | None = None  # None: killed at its timeout
    seconds: float = 0.0
    output: str = ""

    @property
    def log(self) -> Path:
        return self.output_dir.with_name(f"{self.output_dir.name}.log")

    @property
    def finished(self) -> bool:
        return self.returncode == 0

    def status(self) -> str:
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f} s"
        if self.returncode:
            return f"failed (exit {self.returncode}): {last_line(self.output)}"
        return f"finished in {self.seconds:.0f} s"

    def nondeterministic_ops(self) -> list[str]:
        return sorted({line.split(NONDETERMINISTIC)[0].strip().split(" ")[-1]
                       for line in self.output.splitlines() if NONDETERMINISTIC in line})



def check_counts_and_fixed_cost(report: Report, data: Path, work: Path, deadline: Deadline) -> None:
    """(f): per rung, the syncs per step as bench/step_counts.py counts them and as CUDA reports them, and the wall
    and host (thread CPU) ms per step over the bare loop, the six rungs in turns of one step."""
    import warnings

    from bench.intervals import paired
    from bench.runners import RUNGS, WARMUP_STEPS, rung_runs
    from bench.step_by_step import in_turns, step_ms
    from bench.step_counts import CountedSteps, count_syncs
    from bench.test_fixed_cost import WARMUP, tiny_step_argv

    class CudaSyncs:
        """While `counting`, CUDA's sync debug mode warns at each synchronizing call: those warnings counted."""

        counted = 0

        @property
        def counting(self) -> bool:
            return torch.cuda.get_sync_debug_mode() != 0

        @counting.setter
        def counting(self, on: bool) -> None:
            torch.cuda.set_sync_debug_mode("warn" if on else "default")

    counted = 20
    report.section("(f) Syncs and host time per step, on CUDA")
    rows = ["| rung | syncs per step, counted as on the CPU | syncs per step, CUDA's sync debug mode | "
            "wall ms per step over the bare loop | host (CPU) ms over the bare loop |", "|---|---:|---:|---:|---:|"]
    syncs, cuda_syncs = {}, {}
    for rung in RUNGS:
        runs = rung_runs(lambda r, rung=rung: tiny_step_argv(data, work / "f" / "counts" / r.replace(" ", "_"),
                                                             WARMUP_STEPS + counted + 1), WARMUP_STEPS + counted + 1)
        syncs[rung] = count_syncs(runs[rung], counted)["total"]
        counter = CudaSyncs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                runs[rung](CountedSteps(counter, counted))
            finally:
                counter.counting = False
        cuda_syncs[rung] = sum("synchroniz" in str(w.message) for w in caught) / counted
        if deadline.left() < 60:
            break
    if deadline.left() < 60:
        report.add("The runs in turns skipped: the budget ran out. Syncs per step, counted as on the CPU / by CUDA: "
                   + "; ".join(f"{rung} {syncs[rung]:g} / {cuda_syncs[rung]:g}" for rung in syncs) + ".")
        return
    steps = 150  # of the 200 training questions, one epoch at batch 1
    logs = in_turns(rung_runs(lambda r: tiny_step_argv(data, work / "f" / "turns" / r.replace(" ", "_"), steps),
                              steps), steps, between=torch.cuda.synchronize)
    wall, cpu = step_ms(logs, WARMUP, "step_wall"), step_ms(logs, WARMUP)
    for rung in RUNGS:
        cells = []
        for clock in (wall, cpu):
            if rung == "bare loop":
                cells.append(f"{sum(clock[rung]) / len(clock[rung]):.2f} ms in all")
            else:
                diff = paired(clock[rung], clock["bare loop"])
                cells.append(f"{diff['ms']:+.2f} ± {diff['half_width']:.2f}")
        rows.append(f"| {rung} | {syncs.get(rung, float('nan')):g} | {cuda_syncs.get(rung, float('nan')):g} | "
                    + " | ".join(cells) + " |")
    report.add(f"Counted over {counted} steps after {WARMUP_STEPS}; timed over {steps - 1 - WARMUP} steps in turns. "
               "CUDA's count includes the syncs the CPU count cannot see (inside C++ operators, blocking copies). "
               "Each rung's step starts with the device idle (a `torch.cuda.synchronize()` at each hand-over, "
               "outside the timed steps); its wall time is the longer of its host time and the device's, plus the "
               "waits at its syncs; its CPU time includes the host's spin while it waits at a sync.", "", *rows)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_all(runs: list[tuple[Run, list[str], float]], deadline: Deadline) -> list[Run]:
    """Start the runs together (they share the GPU; none is timed) and wait for them, each for at most
    RUN_TIMEOUT_S and none past the deadline. Their output goes to a log file beside each run: a pipe nobody
    reads yet would stall a talkative run."""
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", OMP_NUM_THREADS="4", TOKENIZERS_PARALLELISM="false")
    started, running = time.monotonic(), {}
    for run, trainer_args, memory_fraction in runs:
        command = [sys.executable, str(Path(__file__).resolve()), "--run-trainer", run.trainer,
                   "--memory-fraction", str(memory_fraction), "--", *trainer_args]
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with open(run.log, "w", encoding="utf-8") as log:
            running[run.label] = (run, subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True))
    while running:
        out_of_time = time.monotonic() - started > RUN_TIMEOUT_S or deadline.left() <= 0
        for label, (run, process) in list(running.items()):
            if process.poll() is None and not out_of_time:
                continue
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: with any process it started
                process.wait()
            else:
                run.returncode = process.returncode
            run.seconds = time.monotonic() - started
            run.output = run.log.read_text(encoding="utf-8", errors="replace")
            del running[label]
            print(f"  {run.label}: {run.status()}", flush=True)
        time.sleep(0.5)
    return [run for run, _, _ in runs]


def final_weights(run: Run) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run.output_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {name: tensor for name, tensor in checkpoint["state_dict"].items() if name.startswith("model.")}


def compare_weights(runs: list[Run]) -> str:
    """'bit-identical', or how the runs' final weights differ."""
    if not all(run.finished for run in runs):
        return "not compared (a run did not finish)"
    first, *others = [final_weights(run) for run in runs]
    for run, weights in zip(runs[1:], others, strict=True):
        if weights.keys() != first.keys():
            return f"{run.trainer}'s checkpoint holds other tensors than {runs[0].trainer}'s"
    largest = max((float((weights[name].double() - first[name].double()).abs().max())
                   for weights in others for name in first), default=0.0)
    if all(torch.equal(weights[name], first[name]) for weights in others for name in first):
        return "bit-identical"
    return f"different (largest absolute difference {largest:.3g})"


# ---------------------------------------------------------------- the sections
@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.lines += ["", f"## {title}", ""]
        print(f"\n{title}", flush=True)

    def add(self, *lines: str) -> None:
        self.lines += list(lines)

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return "yes" if ok else "**NO**"


def tiny_run_args(data: Path, output_dir: Path, *extra: str) -> list[str]:
    """tests/conftest.py's tiny run (tiny BART, 3 epochs), on the GPU."""
    return ["--data-dir", str(data), "--output-dir", str(output_dir), "--model-size", "tiny", "--vocab-size", "400",
            "--batch-size", "16", "--max-epochs", "3", "--warmup-steps", "4", "--num-beams", "2",
            "--max-target-length", "16", "--lr", "3e-3", "--accelerator", ACCELERATOR, *extra]


def run_table(runs: list[Run]) -> list[str]:
    return ["| run | result |", "|---|---|", *(f"| {run.label} | {run.status()} |" for run in runs)]


def check_determinism(report: Report, data: Path, work: Path, deadline: Deadline) -> None:
    report.section("(a) Determinism: the three trainers on CUDA, float32, deterministic algorithms")
    runs = run_all([(Run(t, t, work / "a" / t), tiny_run_args(data, work / "a" / t), 0.0) for t in TRAINERS],
                   deadline)
    verdict = compare_weights(runs)
    warned = sorted({op for run in runs for op in run.nondeterministic_ops()})
    report.add("Tiny BART, 3 epochs of 13 steps, `torch.use_deterministic_algorithms(True, warn_only=True)` and "
               "`CUBLAS_WORKSPACE_CONFIG=:4096:8`.", "", *run_table(runs), "",
               f"- final weights (last.ckpt) of the three: **{verdict}** "
               f"(as required: {report.check(verdict == 'bit-identical', '(a) weights')})",
               f"- kernels without a deterministic implementation (warned): {', '.join(warned) or 'none'}")


def check_mixed_precision(report: Report, data: Path, work: Path, deadline: Deadline) -> None:
    report.section("(b) Mixed precision: 16-mixed (GradScaler) and bf16-mixed")
    jobs = [(Run(f"{t}, {p}", t, work / "b" / p / t), tiny_run_args(data, work / "b" / p / t, "--precision", p), 0.0)
            for p in ("16-mixed", "bf16-mixed") for t in TRAINERS]
    runs = run_all(jobs, deadline)
    report.add(*run_table(runs), "")
    for precision in ("16-mixed", "bf16-mixed"):
        group = [run for run in runs if run.label.endswith(precision)]
        finished = report.check(all(run.finished for run in group), f"(b) {precision} runs")
        report.add(f"- {precision}: all three finished: {finished}; final weights of the three (reported, not "
                   f"required): {compare_weights(group)}")


def check_search_against_real_oom(report: Report, work: Path, deadline: Deadline) -> None:
    """16-mixed, the default small model, power search from 32, under a 1 GiB cap: the search must climb into the
    cap, back off and train at the size it found."""
    from shared.synthetic import write_synthetic_squad

    report.section("(c) Batch-size search against a real CUDA out-of-memory")
    data = work / "c-data"
    write_synthetic_squad(data, seed=11, sizes={"train": 4000, "dev": 48, "test": 8})
    cap = 1 << 30
    fraction = cap / torch.cuda.get_device_properties(0).total_memory
    jobs = [(Run(t, t, work / "c" / t),
             ["--data-dir", str(data), "--output-dir", str(work / "c" / t), "--precision", "16-mixed",
              "--auto-batch-size", "power", "--batch-size", "32", "--max-epochs", "1", "--limit-train-batches", "2",
              "--num-beams", "1", "--accelerator", ACCELERATOR], fraction) for t in TRAINERS]
    runs = run_all(jobs, deadline)
    report.add(f"Default model (`--model-size small`), 4,000 training questions, `--precision 16-mixed "
               f"--auto-batch-size power --batch-size 32`, memory capped at {cap >> 20} MiB per process "
               f"(`torch.cuda.set_per_process_memory_fraction({fraction:.5f})`).", "", *run_table(runs), "")
    for run in runs:
        search = search_lines(run.output)
        reached = any("failed" in line or "out of memory" in line for line in search) or tried_past_result(search)
        report.add(f"- {run.trainer}: {'; '.join(search) or '(no search line)'}",
                   f"  - finished: {report.check(run.finished, f'(c) {run.trainer} run')}; out-of-memory reached: "
                   f"{report.check(reached, f'(c) {run.trainer} reached no out-of-memory')}")


def search_lines(output: str) -> list[str]:
    """What a trainer printed about its search: vanilla's and Fabric's `tried [...] -> batch size N`, Lightning's
    `Batch size N succeeded/failed, trying ...` and its result."""
    return [line.strip() for line in output.splitlines()
            if "batch-size search" in line or line.strip().startswith("Batch size ")]


def tried_past_result(lines: list[str]) -> bool:
    """`tried [..., 512] -> batch size 256`: a size above the result was tried, so one failed."""
    for line in lines:
        if "tried [" in line and "-> batch size" in line:
            tried = [int(n) for n in line.split("tried [")[1].split("]")[0].split(",") if n.strip()]
            return max(tried) > int(line.rsplit("batch size", 1)[1].strip())
    return False


def check_data_parallel(report: Report, data: Path, work: Path, deadline: Deadline) -> None:
    gpus = torch.cuda.device_count()
    report.section(f"(d) `--strategy dp` over {gpus} GPU(s), bf16-mixed")
    replica_dtypes(report)
    jobs = [(Run(t, t, work / "d" / t), tiny_run_args(data, work / "d" / t, "--strategy", "dp", "--devices", str(gpus),
                                                      "--precision", "bf16-mixed", "--max-epochs", "1"), 0.0)
            for t in TRAINERS]
    runs = run_all(jobs, deadline)
    report.add("", *run_table(runs), "",
               f"- all finished: {report.check(all(run.finished for run in runs), '(d) dp runs')} (Lightning 2.x has "
               f"no DataParallel: it runs ddp instead)")
    if gpus == 1:
        report.add("- one GPU: DataParallel over one device calls the module in the calling thread, with no "
                   "replica threads; the dtype check above starts two replica threads on that GPU instead")


def replica_dtypes(report: Report) -> None:
    """torch's parallel_apply with two replicas on GPU 0 under bf16 autocast: the dtype of the LM head's output in
    each replica thread, for the bare model (torch's behaviour) and through vanilla/data_parallel.py's wrappers."""
    from torch.nn.parallel import parallel_apply
    from transformers import BartConfig, BartForConditionalGeneration

    from shared.model import MODEL_SIZES, seq2seq_loss
    from vanilla.data_parallel import DataParallelLoss, autocast_in_replicas

    config = BartConfig(vocab_size=400, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, **MODEL_SIZES["tiny"])
    model = BartForConditionalGeneration(config).to(DEVICE)
    seen: list[torch.dtype] = []
    model.lm_head.register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
    ids = torch.randint(3, 400, (2, 12), device=DEVICE)
    mask, labels = torch.ones_like(ids), torch.randint(3, 400, (2, 8), device=DEVICE)
    replica_loss = DataParallelLoss(model, [0], seq2seq_loss, torch.bfloat16).parallel.module
    kwargs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    cases = {"the bare model (torch alone)": (model, (), kwargs),
             "vanilla's DataParallelLoss replica": (replica_loss, (ids, mask, labels), {}),
             "autocast_in_replicas (for Fabric's dp)": (autocast_in_replicas(model, "bf16-mixed"), (), kwargs)}
    report.add("torch's `parallel_apply`, two replica threads on GPU 0, under `torch.autocast('cuda', "
               "dtype=torch.bfloat16)`: the dtype of the LM head's output in the replicas.", "")
    for name, (module, args, module_kwargs) in cases.items():
        seen.clear()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            parallel_apply([module, module], [args, args], [module_kwargs, module_kwargs], devices=[0, 0])
        dtypes = ", ".join(str(dtype).removeprefix("torch.") for dtype in seen)
        if name.startswith("the bare"):
            report.add(f"- {name}: {dtypes} (float16 here is the bug the wrappers fix)")
        else:
            correct = len(seen) == 2 and all(dtype == torch.bfloat16 for dtype in seen)
            report.add(f"- {name}: {dtypes} (bfloat16 as required: {report.check(correct, f'(d) {name} dtype')})")


def measure_throughput(report: Report, deadline: Deadline) -> None:
    from transformers import BartConfig, BartForConditionalGeneration

    from shared.model import MODEL_SIZES, count_parameters, seq2seq_loss

    name = torch.cuda.get_device_name(0)
    peak, part = peak_bf16_flops(name)
    peak_text = f"{peak / 1e12:.0f} TFLOP/s (dense bf16, {part}; the device: {name})" if peak else f"unknown for {name}"
    report.section("(e) Throughput and model FLOPs utilisation, bf16-mixed")
    report.add(f"One training step = forward and loss under `torch.autocast('cuda', torch.bfloat16)`, backward, "
               f"AdamW step; random tokens, source {SOURCE_TOKENS} and target {TARGET_TOKENS} long (the command "
               f"line's defaults); 10 warm-up steps, then 30 timed between `torch.cuda.synchronize()` calls. MFU = "
               f"model FLOPs per example x examples per second / peak, the FLOPs of `training_flops_per_example`: 6 "
               f"per weight of a linear layer per token it sees, the encoder's over the source tokens, the decoder's "
               f"(its cross-attention counted over the target tokens too) and the LM head's over the target tokens; "
               f"embedding lookups and attention's score products not counted. Peak: {peak_text}.",
               "", "| model | parameters | batch | tokens/s | MFU | peak memory |", "|---|---|---|---|---|---|")
    for label, vocab, size, batch in (("default (`small`)", 1000, MODEL_SIZES["small"], 128),
                                      ("bart-base dimensions", 50265, BART_BASE, 64)):
        if deadline.left() < 30:
            report.add(f"| {label} | skipped: the time budget ran out | | | | |")
            continue
        config = BartConfig(vocab_size=vocab, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2, decoder_start_token_id=2, **size)
        model = BartForConditionalGeneration(config).to(DEVICE).train()
        tokens_per_s, memory = time_training_steps(model, seq2seq_loss, vocab, batch)
        parameters = count_parameters(model)
        examples_per_s = tokens_per_s / (SOURCE_TOKENS + TARGET_TOKENS)
        flops = training_flops_per_example(model, SOURCE_TOKENS, TARGET_TOKENS)
        mfu = f"{flops * examples_per_s / peak:.1%}" if peak else "unknown peak"
        report.add(f"| {label} | {parameters / 1e6:.1f} M | {batch} | {tokens_per_s:,.0f} | {mfu} | "
                   f"{memory / 2**30:.1f} GiB |")
        del model
        torch.cuda.empty_cache()


def peak_bf16_flops(device_name: str) -> tuple[float | None, str | None]:
    """The dense bfloat16 peak of the GPU named so, and the part it was taken for (None, None: not known)."""
    return next(((flops, part) for fragment, flops, part in PEAK_BF16_FLOPS if fragment in device_name), (None, None))


def training_flops_per_example(model, source: int, target: int) -> float:
    """The model FLOPs of one training example (forward and backward: 6 per weight per token) of a BART: the weights
    of the encoder's linear layers see the `source` tokens; those of the decoder's (its cross-attention's included,
    counted over the `target` tokens) and the LM head's see the `target` tokens. Embedding lookups, layer norms and
    attention's score products are not counted."""

    def linear_weights(module: torch.nn.Module) -> int:
        return sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, torch.nn.Linear))

    encoder = linear_weights(model.model.encoder)
    decoder = linear_weights(model.model.decoder) + model.lm_head.weight.numel()
    return 6.0 * (encoder * source + decoder * target)


def time_training_steps(model, loss_fn, vocab: int, batch: int, warmup: int = 10, steps: int = 30,
                        source: int = SOURCE_TOKENS, target: int = TARGET_TOKENS) -> tuple[float, int]:
    """(tokens per second, peak memory in bytes) over `steps` timed training steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, vocab, (batch, source), device=DEVICE)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(3, vocab, (batch, target), device=DEVICE)}

    def step() -> None:
        with torch.autocast(DEVICE, dtype=torch.bfloat16, cache_enabled=False):
            loss = loss_fn(model, data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return steps * batch * (source + target) / seconds, torch.cuda.max_memory_allocated()


# ---------------------------------------------------------------- the page
def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def write_page(report: Report, seconds: float) -> None:
    gpus = torch.cuda.device_count()
    header = ["# GPU check", "",
              f"Measured by `make gpu-check` (scripts/gpu_check.py) on {gpus} x {torch.cuda.get_device_name(0)}, "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, at commit {commit()}, "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s.", "",
              f"**{'All checks passed.' if not report.failures else 'Failed: ' + '; '.join(report.failures)}**"]
    REPORT.write_text("\n".join(header + report.lines) + "\n", encoding="utf-8")


def main() -> int:
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    sys.path.insert(0, str(REPO))
    from shared.synthetic import write_synthetic_squad

    started, deadline, report = time.monotonic(), Deadline(BUDGET_S), Report()
    print(f"gpu-check on {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}; at most {BUDGET_S} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        data = work / "data"
        write_synthetic_squad(data, seed=7, sizes={"train": 200, "dev": 48, "test": 24})  # tests' tiny_data
        sections = [  # (title, seconds it needs at least, the section)
            ("(a) determinism", 60, lambda: check_determinism(report, data, work, deadline)),
            ("(b) mixed precision", 60, lambda: check_mixed_precision(report, data, work, deadline)),
            ("(c) search against a real out-of-memory", 60,
             lambda: check_search_against_real_oom(report, work, deadline)),
            ("(d) --strategy dp", 45, lambda: check_data_parallel(report, data, work, deadline)),
            ("(e) throughput and MFU", 40, lambda: measure_throughput(report, deadline)),
            ("(f) syncs and host time per step", 90, lambda: check_counts_and_fixed_cost(report, data, work, deadline)),
        ]
        for title, needs, section in sections:
            run_section(report, title, needs, section, deadline)
    write_page(report, time.monotonic() - started)
    outcome = "all checks passed" if not report.failures else "failed: " + "; ".join(report.failures)
    print(f"\nwritten: {REPORT.relative_to(REPO)}; {outcome}")
    return 1 if report.failures else 0


def run_section(report: Report, title: str, needs: float, section, deadline: Deadline) -> None:
    """The section, unless fewer than `needs` seconds of the budget are left; a crash is reported, not raised, so
    that the sections after it still run."""
    if deadline.left() < needs:
        report.add("", f"## {title}", "", "Skipped: the eight-minute budget ran out.")
        report.failures.append(f"{title} skipped (time budget)")
        print(f"\n{title}: skipped, the eight-minute budget ran out", flush=True)
        return
    try:
        section()
    except Exception as error:  # noqa: BLE001 -- any crash of a section is a finding of the check
        report.add("", f"Crashed: {type(error).__name__}: {last_line(str(error))}")
        report.failures.append(f"{title} crashed")
        print(f"  crashed: {type(error).__name__}: {error}", flush=True)


def parse_runner_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="runner mode: one trainer run, deterministic, optionally capped")
    parser.add_argument("--run-trainer", choices=TRAINERS, required=True)
    parser.add_argument("--memory-fraction", type=float, default=0.0)
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.trainer_args[:1] == ["--"]:
        args.trainer_args = args.trainer_args[1:]
    return args


if __name__ == "__main__":
    if "--run-trainer" in sys.argv[1:2]:
        runner = parse_runner_args(sys.argv[1:])
        run_trainer(runner.run_trainer, runner.memory_fraction, runner.trainer_args)
    else:
        sys.exit(main())
