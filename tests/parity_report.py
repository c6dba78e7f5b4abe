"""The parity report: rows recorded by the parity tests (feature, what each trainer did, equal or not), printed
as a table at the end of the test session, and written as Markdown with a plot of the trainers' loss curves, one
over the other (`make parity`)."""

from __future__ import annotations

from pathlib import Path

TRAINERS = ("vanilla", "fabric", "lightning")  # the ladder: by hand, Fabric, the Trainer
ROWS: list[tuple[str, dict[str, str], bool]] = []
CURVES: dict[str, list[dict]] = {}  # trainer -> rows of its metrics.csv, for the plot


def record_parity(feature: str, results: dict[str, str], equal: bool) -> None:
    """`results`: what each trainer did, as shown in the report; `equal`: all of them agree exactly."""
    ROWS.append((feature, {trainer: str(results.get(trainer, "")) for trainer in TRAINERS}, bool(equal)))


def table() -> list[str]:
    rows = [("feature", *TRAINERS, "equal")]
    rows += [(f, *(shown[t] for t in TRAINERS), "yes" if eq else "NO") for f, shown, eq in ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines + [f"{sum(r[2] for r in ROWS)} of {len(ROWS)} comparisons equal"]


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
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["# Parity: vanilla/, fabric/ and lightning/ on the CPU", "",
             f"Measured at {measured_at()} by `make parity` (tests/test_parity.py). Every row compares the three "
             f"trainers' results exactly: tensors with `torch.equal`, files byte for byte; float32 unless the row "
             f"says otherwise. The loop state in checkpoints (position in the epoch, loader and RNG state) is each "
             f"trainer's own format and is not compared; resuming another trainer's checkpoint is refused.", "",
             f"| feature | {' | '.join(TRAINERS)} | equal |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {' | '.join(shown[t] for t in TRAINERS)} | {'yes' if eq else '**no**'} |"
              for f, shown, eq in ROWS]
    lines.append(f"\n{sum(r[2] for r in ROWS)} of {len(ROWS)} comparisons equal.")
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
              "lightning": dict(color="tab:red", linewidth=1.5, linestyle="--", marker="o", markersize=4)}
    for axis, metric in zip(axes, ("train_loss", "dev_loss"), strict=True):
        for trainer, rows in CURVES.items():
            points = [(int(r["epoch"]), float(r[metric])) for r in rows if r.get(metric)]
            axis.plot([p[0] for p in points], [p[1] for p in points], label=trainer, **styles[trainer])
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(title="trainer")
    axes[0].set_title("Per-epoch losses of the three trainers (tiny parity run)")
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
