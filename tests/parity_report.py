"""The parity report: rows recorded by the parity tests (feature, what each trainer did, equal or not), printed
as a table at the end of the test session, and written as Markdown with a plot of the trainers' loss curves, one
over the other (`make parity`).

Every comparison the report expects is listed in EXPECTED, with its kind and the test that records it: a bitwise
comparison (tensors with `torch.equal`, files byte for byte, state values with `==`) or a behaviour check (the same
decision, message or refusal: a stop epoch and reason, the batch sizes tried, the checkpoint files kept). The
session fails when an expected comparison was not recorded (tests/conftest.py: `pytest_sessionfinish`), so that a
fixture that failed, a test that was skipped, or, in a parity run, one left out cannot leave a clean count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAINERS = ("vanilla", "fabric", "lightning")  # the ladder: by hand, Fabric, the Trainer
RUNGS = (*TRAINERS, "hf_trainer")  # the report's columns: transformers' Seq2SeqTrainer joins the rows it runs
NOT_RUN = "—"  # the cell of a rung a row does not compare (yet)
BITWISE, BEHAVIOUR = "bitwise", "behaviour"
PARITY_TESTS = "tests/test_parity.py"


@dataclass(frozen=True)
class Expected:
    kind: str  # BITWISE or BEHAVIOUR
    test: str  # the node id of the test that records it


def _each_trainer(test: str, feature: str) -> list[tuple[str, str, str]]:
    """A test parametrized by trainer: one bitwise row per trainer, `feature` naming it with {}."""
    return [(f"{test}[{trainer}]", feature.format(trainer), BITWISE) for trainer in TRAINERS]


def _expected() -> dict[str, Expected]:
    rows = [  # (test, feature, kind), in the order tests/test_parity.py runs them
        ("test_training_gives_equal_weights_and_losses", "training, 3 epochs: final weights", BITWISE),
        ("test_training_gives_equal_weights_and_losses", "per-epoch train/dev loss", BITWISE),  # as logged, as text
        ("test_training_gives_equal_weights_and_losses", "metrics.csv", BITWISE),
        # which files top-k kept and which is best: names, not contents (the weights row compares contents)
        ("test_checkpointing_gives_the_same_files_and_best", "checkpoint files (top-2 + last)", BEHAVIOUR),
        ("test_checkpointing_gives_the_same_files_and_best", "best checkpoint", BEHAVIOUR),
        ("test_checkpointing_gives_the_same_files_and_best", "weights inside each checkpoint trio", BITWISE),
        ("test_checkpointing_gives_the_same_files_and_best", "the best checkpoint's weights (the one tested)",
         BITWISE),
        ("test_test_phase_gives_the_same_predictions_and_scores", "test phase: predictions.jsonl", BITWISE),
        ("test_test_phase_gives_the_same_predictions_and_scores", "test phase: test_metrics.json's scores", BITWISE),
        ("test_early_stopping_stops_all_at_the_same_epoch_for_the_same_reason",
         "early stopping (patience 1): last epoch", BEHAVIOUR),
        ("test_early_stopping_stops_all_at_the_same_epoch_for_the_same_reason", "early stopping: reason", BEHAVIOUR),
        ("test_early_stopping_stops_all_at_the_same_epoch_for_the_same_reason", "early stopping: final weights",
         BITWISE),
        ("test_early_stopping_stops_all_at_the_same_epoch_for_the_same_reason",
         "early stopping: the best checkpoint's weights", BITWISE),
        *[row for mode in ("power", "binsearch") for row in [
            (f"test_batch_size_search_tries_the_same_sizes[{mode}]", f"batch-size search ({mode}, OOM above 40)",
             BEHAVIOUR),
            (f"test_batch_size_search_tries_the_same_sizes[{mode}]", f"  then 1 epoch at the found size ({mode})",
             BITWISE)]],
        ("test_a_run_killed_mid_epoch_and_resumed_equals_the_others_uninterrupted_runs",
         "kill mid-epoch + --resume last, vs every uninterrupted run", BITWISE),
        ("test_gradient_accumulation_gives_equal_weights", "accumulate 2 batches, 1 epoch: final weights", BITWISE),
        ("test_gradient_accumulation_gives_equal_weights", "accumulate 2 batches: metrics.csv", BITWISE),
        ("test_bf16_mixed_gives_equal_weights", "bf16-mixed, 2 epochs: final weights", BITWISE),
        ("test_bf16_mixed_gives_equal_weights", "bf16-mixed: metrics.csv, predictions, test scores", BITWISE),
        ("test_ddp_on_two_cpu_processes_gives_equal_weights", "DDP, 2 CPU processes: final weights", BITWISE),
        ("test_ddp_on_two_cpu_processes_gives_equal_weights", "DDP: metrics.csv, predictions, test scores", BITWISE),
        *_each_trainer("test_two_torchrun_nodes_on_the_loopback_equal_one_node",
                       "2 torchrun nodes x 1 process: {}, vs every one-node DDP run"),
        *_each_trainer("test_slurm_tasks_equal_the_self_launched_run", "SLURM, 2 tasks: {}, vs every one-node DDP run"),
        *_each_trainer("test_ddp_killed_and_resumed_equals_the_uninterrupted_runs",
                       "DDP: {} killed + --resume last, vs every uninterrupted run"),
        *_each_trainer("test_ddp_sigterm_to_every_process_and_resume_equal_the_uninterrupted_runs",
                       "DDP: {} SIGTERM to every rank + --resume last, vs every uninterrupted run"),
        ("test_optimizer_scheduler_and_callback_states_are_equal", "optimizer state (AdamW) in last.ckpt", BITWISE),
        ("test_optimizer_scheduler_and_callback_states_are_equal", "LR scheduler state in last.ckpt", BITWISE),
        ("test_optimizer_scheduler_and_callback_states_are_equal", "EarlyStopping state in last.ckpt", BITWISE),
        ("test_optimizer_scheduler_and_callback_states_are_equal", "ModelCheckpoint state in last.ckpt", BITWISE),
        ("test_fine_tuning_a_pretrained_model_gives_equal_weights", "fine-tuning --model DIR, 5 steps: final weights",
         BITWISE),
        ("test_fine_tuning_a_pretrained_model_gives_equal_weights",
         "fine-tuning: predictions.jsonl, test scores", BITWISE),
        # the predictions each trainer writes from the others' checkpoints, byte for byte; then the refusals
        ("test_each_trainer_tests_the_others_checkpoints", "cross-loading: test the others' best checkpoints",
         BITWISE),
        ("test_each_trainer_tests_the_others_checkpoints", "cross-loading: resume the others' checkpoints",
         BEHAVIOUR),
    ]
    expected = {feature: Expected(kind, f"{PARITY_TESTS}::{test}") for test, feature, kind in rows}
    if len(expected) != len(rows):
        raise ValueError("a parity comparison is named twice: each feature names one comparison")
    return expected


EXPECTED: dict[str, Expected] = _expected()  # every comparison of a whole parity run


@dataclass(frozen=True)
class Row:
    feature: str
    shown: dict[str, str]  # what each trainer did, as the report shows it
    equal: bool
    kind: str


ROWS: list[Row] = []
CURVES: dict[str, list[dict]] = {}  # trainer -> rows of its metrics.csv, for the plot


def record_parity(feature: str, results: dict[str, str], equal: bool) -> None:
    """`results`: what each trainer did, as shown in the report; `equal`: all of them agree exactly. The feature
    must be one EXPECTED lists (which says its kind), recorded once."""
    if feature not in EXPECTED:
        raise ValueError(f"parity comparison {feature!r} is not in tests/parity_report.py's EXPECTED: add it there, "
                         f"with its kind and its test")
    if any(row.feature == feature for row in ROWS):
        raise ValueError(f"parity comparison {feature!r} recorded twice")
    ROWS.append(Row(feature, {rung: str(results[rung]) if rung in results else NOT_RUN for rung in RUNGS}, bool(equal),
                    EXPECTED[feature].kind))


def required(selected: set[str], parity_run: bool) -> list[str]:
    """The comparisons this session must record: all of them in a parity run (`make parity`: the suite as a
    whole, where leaving a test out is a gap in the report), else those of the tests selected to run."""
    return [feature for feature, expected in EXPECTED.items() if parity_run or expected.test in selected]


def not_recorded(features: list[str], rows: list[Row]) -> list[str]:
    recorded = {row.feature for row in rows}
    return [feature for feature in features if feature not in recorded]


def counts(rows: list[Row], missing: list[str]) -> list[str]:
    """One line per kind: how many of the expected comparisons of that kind ran and were equal."""
    lines = []
    for kind, label, noun, verb in ((BITWISE, "Bit for bit", "comparisons", "equal"),
                                    (BEHAVIOUR, "Behaviour", "checks", "agree")):
        ran = [row for row in rows if row.kind == kind]
        absent = sum(EXPECTED[feature].kind == kind for feature in missing)
        if not ran and not absent:
            continue
        line = f"{label}: {sum(row.equal for row in ran)} of {len(ran) + absent} {noun} {verb}"
        lines.append(line + (f"; {absent} did not run." if absent else "."))
    return lines


def table(rows: list[Row], missing: list[str], left_out: int) -> list[str]:
    """The terminal's table: the recorded rows, then the expected ones that did not run, then the counts.
    `left_out`: expected comparisons whose tests this session did not select (not a parity run)."""
    cells = [("feature", *RUNGS, "compared", "equal")]
    cells += [(row.feature, *(row.shown[t] for t in RUNGS), row.kind, "yes" if row.equal else "NO")
              for row in rows]
    cells += [(feature, *("" for _ in RUNGS), EXPECTED[feature].kind, "DID NOT RUN") for feature in missing]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines += counts(rows, missing)
    if left_out:
        lines.append(f"{left_out} more of the suite's {len(EXPECTED)} comparisons were not selected in this session.")
    return lines


def measured_at() -> str:
    """`commit X (with uncommitted changes) on N CPU cores (arch), date`: where this report's runs were made."""
    import datetime
    import os
    import platform
    import subprocess

    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    machine = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    return f"commit {commit}{dirty} on {machine}, {datetime.date.today().isoformat()}"


def write_report(directory: Path) -> list[Path]:
    """parity.md (and the loss plot) from a complete run: conftest.py writes nothing when a comparison is missing."""
    directory.mkdir(parents=True, exist_ok=True)
    four_way = sum(row.shown["hf_trainer"] != NOT_RUN for row in ROWS)
    lines = ["# Parity: vanilla/, fabric/, lightning/ and hf_trainer/ on the CPU", "",
             f"Measured at {measured_at()} by `make parity` (tests/test_parity.py); float32 unless the row says "
             f"otherwise. transformers' Seq2SeqTrainer (hf_trainer/) is in {four_way} of the {len(ROWS)} rows so far; "
             f"{NOT_RUN} marks the rows it is not compared in yet. Two kinds of row: **bitwise** compares the "
             f"trainers' results exactly (tensors with "
             f"`torch.equal`, files byte for byte, checkpoint state values with `==`); **behaviour** compares what "
             f"they decided or said (the stop epoch and reason, the batch sizes tried, the checkpoint files kept, a "
             f"refusal), exactly as text or numbers. Not compared: the loop state in checkpoints (position in the "
             f"epoch, loader and RNG state), each trainer's own format (resuming another trainer's checkpoint is "
             f"refused), and TensorBoard's event files, which hold wall-clock times.", "",
             f"| feature | {' | '.join(RUNGS)} | compared | equal |", "|---|" + "---|" * (len(RUNGS) + 2)]
    lines += [f"| {row.feature} | {' | '.join(row.shown[t] for t in RUNGS)} | {row.kind} | "
              f"{'yes' if row.equal else '**no**'} |" for row in ROWS]
    lines += [""] + counts(ROWS, [])
    report = directory / "parity.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written = [report]
    if CURVES:
        written.append(plot_losses(directory / "parity_loss.png"))
    return written


def plot_losses(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    styles = {"vanilla": dict(color="tab:blue", linewidth=7, alpha=0.3),
              "fabric": dict(color="tab:green", linewidth=3, alpha=0.7),
              "lightning": dict(color="tab:red", linewidth=1.5, linestyle="--", marker="o", markersize=4),
              "hf_trainer": dict(color="black", linewidth=0, marker="x", markersize=7)}
    for axis, metric in zip(axes, ("train_loss", "dev_loss"), strict=True):
        for trainer, rows in CURVES.items():
            points = [(int(r["epoch"]), float(r[metric])) for r in rows if r.get(metric)]
            axis.plot([p[0] for p in points], [p[1] for p in points], label=trainer, **styles[trainer])
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(title="trainer")
    axes[0].set_title("Per-epoch losses of the four trainers (tiny parity run)")
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
