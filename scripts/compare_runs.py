"""Run the four trainers with the same command line and print what each did, side by side (`make demo`).

    python scripts/compare_runs.py [--runs-root runs] [TRAINER ARGS ...]   train all four, then compare
    python scripts/compare_runs.py --compare [RUN RUN RUN RUN]             compare runs already made

Training, each trainer gets a new version directory (RUNS_ROOT/vanilla/version_N, RUNS_ROOT/fabric/version_M,
...). With --compare, four run directories (vanilla's, fabric's, lightning's, hf_trainer's) are compared as they
are; with none named, the latest finished version of each trainer. The summary is read back from the artifacts
the runs leave (metrics.csv, hparams.yaml, checkpoints, test_metrics.json), and the exit status is 1 when the runs
disagree on anything the table compares.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from shared.checkpoint_file import model_weights
from shared.run_dir import new_version, versions

TRAINERS = ("vanilla", "fabric", "lightning", "hf_trainer")  # by hand, Fabric, Lightning's and transformers' Trainer
LIGHTNING_LAYOUT = TRAINERS[:3]  # checkpoints named and kept as Lightning's; transformers' Trainer keeps checkpoint-N/
NOT_COMPARED = ("wall time",)
AMONG_LIGHTNING_LAYOUT = ("best checkpoint",)


def run_trainer(name: str, output_dir: Path, trainer_args: list[str]) -> float:
    command = [sys.executable, str(REPO / name / "train.py"), "--output-dir", str(output_dir), *trainer_args]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, cwd=REPO).returncode
    if status:
        raise SystemExit(f"error: {name}/train.py exited with status {status}")
    return time.perf_counter() - started


def summarise(output_dir: Path, wall_time: float | None) -> dict:
    with open(output_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    dev = [(int(r["epoch"]), float(r["dev_loss"])) for r in rows if r.get("dev_loss")]
    max_epochs = yaml.safe_load((output_dir / "hparams.yaml").read_text())["max_epochs"]
    last_epoch = dev[-1][0]
    report = json.loads((output_dir / "test_metrics.json").read_text())
    return {
        "wall time": f"{wall_time:.1f} s" if wall_time is not None else "-",
        "epochs run": str(last_epoch + 1),
        "stopped": f"early, after epoch {last_epoch}" if last_epoch + 1 < max_epochs else "max_epochs reached",
        "final dev_loss": f"{dev[-1][1]:.6f}",
        "best dev_loss": f"{min(loss for _, loss in dev):.6f}",
        "best checkpoint": report["checkpoint"],
        **{name: f"{report[name]:.4f}" for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l")},
    }


def tested_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "test_metrics.json").read_text())["checkpoint"]


def same_weights(a: Path, b: Path) -> bool:
    """Every tensor of the two checkpoints' models equal, bit for bit."""
    x, y = model_weights(a), model_weights(b)
    return sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x)


def print_table(summaries: dict[str, dict], weights: dict[str, bool]) -> bool:
    """`weights`: row -> whether the runs' weights there are identical."""
    rows = [(field, *(summaries[name][field] for name in TRAINERS)) for field in summaries["vanilla"]]
    width = max(len(r[0]) for r in rows) + 2
    col = max(len(v) for r in rows for v in r[1:]) + 2
    print(f"\n{'':{width}}" + "".join(f"{name:{col}}" for name in TRAINERS) + "same")
    agree = all(weights.values())
    for field, *values in rows:
        compared = values[:len(LIGHTNING_LAYOUT)] if field in AMONG_LIGHTNING_LAYOUT else values
        mark = "" if field in NOT_COMPARED else ("yes" if len(set(compared)) == 1 else "NO")
        agree &= mark != "NO"
        print(f"{field:{width}}" + "".join(f"{value:{col}}" for value in values) + mark)
    for field, (shown, identical) in {
            "final weights": (["last.ckpt"] * len(LIGHTNING_LAYOUT) + ["-"], weights["final weights"]),
            "tested weights": (["best checkpoint"] * len(TRAINERS), weights["tested weights"])}.items():
        print(f"{field:{width}}" + "".join(f"{value:{col}}" for value in shown)
              + ("identical" if identical else "DIFFER"))
    print(f"\nthe {len(TRAINERS)} trainers agree" if agree else f"\nthe {len(TRAINERS)} trainers DISAGREE")
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-root", type=Path, default=Path("runs"),
                        help="where the trainers' version directories go (default: runs)")
    parser.add_argument("--compare", nargs="*", type=Path, metavar="RUN",
                        help="compare runs already made, one per trainer (default: each one's latest finished version)")
    args, trainer_args = parser.parse_known_args(argv)
    runs_root = args.runs_root.resolve()  # the trainers run from the repository root
    if args.compare is not None:
        if trainer_args or len(args.compare) not in (0, len(TRAINERS)):
            raise SystemExit(f"error: --compare takes {len(TRAINERS)} run directories ({', '.join(TRAINERS)}), or "
                             f"none for each trainer's latest version")
        finished = {name: [run for run in versions(runs_root / name) if (run / "test_metrics.json").is_file()]
                    for name in TRAINERS}
        runs = dict(zip(TRAINERS, args.compare, strict=True)) if args.compare else \
            {name: (finished[name] or [None])[-1] for name in TRAINERS}
        missing = [str(run or name) for name, run in runs.items()
                   if run is None or not all((run / file).is_file() for file in ("metrics.csv", "hparams.yaml",
                                                                                   "test_metrics.json"))]
        if missing:
            raise SystemExit(f"error: no finished run to compare: {', '.join(missing)} (under {runs_root})")
        wall_times = dict.fromkeys(TRAINERS)
    else:
        runs = {name: new_version(runs_root / name) for name in TRAINERS}
        wall_times = {name: run_trainer(name, runs[name], trainer_args) for name in TRAINERS}
    summaries = {name: summarise(runs[name], wall_times[name]) for name in TRAINERS}
    print("\n" + "\n".join(f"{name}: {runs[name]}" for name in TRAINERS))
    weights = {  # the final weights of the run where they are kept (transformers' Trainer keeps the best alone)
        "final weights": all(same_weights(runs["vanilla"] / "checkpoints" / "last.ckpt",
                                          runs[name] / "checkpoints" / "last.ckpt") for name in LIGHTNING_LAYOUT),
        "tested weights": all(same_weights(tested_checkpoint(runs["vanilla"]), tested_checkpoint(runs[name]))
                              for name in TRAINERS)}
    return 0 if print_table(summaries, weights) else 1


if __name__ == "__main__":
    sys.exit(main())
