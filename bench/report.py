"""Turn one `pytest bench --benchmark-only --benchmark-json FILE` run into bench/results.md and bench/results.png:
ratios first, then the absolute numbers behind them, then the lines of code. Every number comes from FILE
(one run, side by side) and from bench/count_lines.py.

    python bench/report.py bench/benchmark.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.count_lines import count, markdown  # noqa: E402

VARIANTS = ("bare loop", "vanilla", "lightning (defaults)", "lightning (as configured)")
TARGETS = {"vanilla vs bare loop": 0.03, "lightning (as configured) vs vanilla": 0.05}


def load(path: Path) -> tuple[dict, list[dict]]:
    document = json.loads(path.read_text())
    if any("data" in bench["stats"] for bench in document["benchmarks"]):
        # pytest-benchmark keeps every round's raw time (tens of thousands for the microbenchmarks, megabytes of
        # JSON); the report uses the statistics, so the committed file keeps those alone
        for bench in document["benchmarks"]:
            bench["stats"].pop("data", None)
        path.write_text(json.dumps(document, indent=1) + "\n")
    return document, document["benchmarks"]


def pick(benchmarks: list[dict], prefix: str, **match) -> dict | None:
    for bench in benchmarks:
        info = bench["extra_info"]
        if bench["name"].startswith(prefix) and all(info.get(k) == v for k, v in match.items()):
            return bench
    return None


def per_step(benchmarks, model_size) -> dict[str, dict]:
    bench = pick(benchmarks, "test_per_step", model_size=model_size)
    return bench["extra_info"]["variants"] if bench else {}


def fmt_ratio(x: float) -> str:
    return f"{x:.3f}x"


def overhead_section(benchmarks) -> tuple[list[str], dict]:
    lines, checks = [], {}
    for size in ("small", "tiny"):
        rows = per_step(benchmarks, size)
        if not rows:
            continue
        floor = rows["bare loop"]["ms_per_step"]
        label = "default model (small BART, 1.1 M parameters)" if size == "small" else "tiny model (50 k parameters)"
        lines += [f"\n**{label}**: {rows['bare loop']['rounds']} interleaved rounds, "
                  f"{rows['bare loop']['steps_timed']} timed steps per variant\n",
                  "| variant | ms per step | ratio to the bare loop | ratio to vanilla | overhead per step |",
                  "|---|---:|---:|---:|---:|"]
        for variant, info in rows.items():
            ms = info["ms_per_step"]
            lines.append(f"| {variant} | {ms:.2f} | {fmt_ratio(info['ratio_to_bare_loop'])} | "
                         f"{fmt_ratio(info['ratio_to_vanilla'])} | {ms - floor:+.2f} ms |")
        if size == "small":
            checks = {"vanilla vs bare loop": rows["vanilla"]["ratio_to_bare_loop"] - 1,
                      "lightning (as configured) vs vanilla": rows["lightning (as configured)"]["ratio_to_vanilla"] - 1}
    return lines, checks


def ratio_rows(benchmarks) -> list[tuple[str, float | None, float | None, str]]:
    """(measure, vanilla, lightning, unit) for the trainer-against-trainer comparisons."""
    rows = []
    small = per_step(benchmarks, "small")
    for key, name in (("samples_per_s", "training samples/s"), ("target_tokens_per_s", "training target tokens/s"),
                      ("validation_samples_per_s", "validation samples/s")):
        if "vanilla" in small and "lightning (as configured)" in small:
            rows.append((name, small["vanilla"].get(key), small["lightning (as configured)"].get(key), "/s"))
    for mode in ("power", "binsearch"):
        v = pick(benchmarks, "test_batch_size_search", trainer="vanilla", mode=mode)
        pl = pick(benchmarks, "test_batch_size_search", trainer="lightning", mode=mode)
        if v and pl:
            rows.append((f"batch-size search ({mode}), {v['extra_info']['trials']} / {pl['extra_info']['trials']} "
                         f"trials", v["extra_info"]["search_seconds"], pl["extra_info"]["search_seconds"], "s"))
    for kind in ("save", "load"):
        v = pick(benchmarks, f"test_checkpoint_{kind}[vanilla")
        pl = pick(benchmarks, f"test_checkpoint_{kind}[lightning")
        if v and pl:
            rows.append((f"checkpoint {kind}", v["stats"]["median"], pl["stats"]["median"], "s"))
    v, pl = pick(benchmarks, "test_checkpoint_save[vanilla"), pick(benchmarks, "test_checkpoint_save[lightning")
    if v and pl:
        rows.append(("checkpoint size", v["extra_info"]["size_mb"], pl["extra_info"]["size_mb"], "MB"))
    v, pl = pick(benchmarks, "test_startup_to_first_step[vanilla"), pick(benchmarks, "test_startup_to_first_step[lightning")
    if v and pl:
        rows.append(("start-up to first optimizer step", v["extra_info"]["startup_seconds"],
                     pl["extra_info"]["startup_seconds"], "s"))
    v, pl = pick(benchmarks, "test_peak_memory[vanilla"), pick(benchmarks, "test_peak_memory[lightning")
    if v and pl:
        for key, name in (("max_rss_mb", "peak RSS"), ("cuda_max_allocated_mb", "CUDA max allocated")):
            if key in v["extra_info"] and key in pl["extra_info"]:
                rows.append((name, v["extra_info"][key], pl["extra_info"][key], "MB"))
    return rows


def write(json_path: Path, out_dir: Path = HERE) -> list[Path]:
    document, benchmarks = load(json_path)
    machine = document.get("machine_summary") or document["machine_info"].get("cpu", {}).get("brand_raw", "")
    lines = ["# Benchmarks: what Lightning removes, and what it costs", "",
             f"Measured in one run of `pytest bench --benchmark-only` on {document['datetime'][:10]}: {machine}; "
             f"Python {document['machine_info']['python_version']}. Ratios first; every ratio compares numbers "
             f"taken side by side in that run. Regenerate with `make bench`.", "",
             "## Per-step overhead", ""]
    overhead, checks = overhead_section(benchmarks)
    if checks:
        lines.append("Targets (default model): " + "; ".join(
            f"{name} {value:+.1%} (target within {TARGETS[name]:.0%}: {'met' if abs(value) <= TARGETS[name] else 'NOT met'})"
            for name, value in checks.items()) + ".")
    lines += overhead
    components = [b for b in benchmarks if b["name"].startswith(("test_gradient_clipping", "test_scheduler_step",
                                                                  "test_progress_bar_update"))]
    if components:
        lines += ["", "Where the time goes beyond the floor: the per-step features the bare loop does not have, each "
                  "timed alone on the default model (median):", "", "| per-step feature | ms |", "|---|---:|"]
        lines += [f"| {b['extra_info']['component']} | {1000 * b['stats']['median']:.3f} |" for b in components]
    rows = ratio_rows(benchmarks)
    if rows:
        lines += ["", "## Lightning against the hand-written trainer", "",
                  "| measure | vanilla | lightning | lightning / vanilla |", "|---|---:|---:|---:|"]
        for name, v, pl, unit in rows:
            if v is None or pl is None:
                continue
            shown = (lambda x: f"{x:,.0f}{unit}") if unit == "/s" else (lambda x: f"{x:.3f} {unit}")
            lines.append(f"| {name} | {shown(v)} | {shown(pl)} | {fmt_ratio(pl / v)} |")
    dynamic, padded = pick(benchmarks, "test_padding[dynamic"), pick(benchmarks, "test_padding[to 512")
    if dynamic and padded:
        d, p = dynamic["extra_info"], padded["extra_info"]
        lines += ["", "## Padding", "",
                  f"Bare loop, small model: dynamic padding trains {d['target_tokens_per_s']:,.0f} target tokens/s, "
                  f"padding every input to 512 tokens (the seed's reference repository) "
                  f"{p['target_tokens_per_s']:,.0f}: **{d['target_tokens_per_s'] / p['target_tokens_per_s']:.1f}x** "
                  f"({d['ms_per_step']:.0f} against {p['ms_per_step']:.0f} ms per step)."]
    lines += ["", "## What Lightning removes, in lines of code", "",
              "Non-blank lines that are not comments or docstrings, per feature (`python bench/count_lines.py "
              "--show` lists every line with its feature). The exact-resume code the Lightning twin needs is "
              "counted on its side.", "", markdown(count())]
    results = out_dir / "results.md"
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [results, chart(benchmarks, rows, out_dir / "results.png")]


def chart(benchmarks, rows, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    small = per_step(benchmarks, "small")
    if small:
        names = list(small)
        values = [small[n]["ms_per_step"] for n in names]
        ratios = [small[n]["ratio_to_bare_loop"] for n in names]
        bars = axes[0].bar(range(len(names)), values, color=["grey", "tab:blue", "tab:orange", "tab:red"][:len(names)])
        axes[0].set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        axes[0].set_ylabel("ms per training step")
        axes[0].set_title("Per-step time, default model")
        for bar, value, ratio in zip(bars, values, ratios):
            axes[0].annotate(f"{ratio:.3f}x", (bar.get_x() + bar.get_width() / 2, value),
                             ha="center", va="bottom", fontsize=8)
    shown = [(name, pl / v) for name, v, pl, _ in rows if v and pl]
    if shown:
        axes[1].barh(range(len(shown)), [r for _, r in shown], color="tab:red")
        axes[1].set_yticks(range(len(shown)), [n for n, _ in shown], fontsize=7)
        axes[1].axvline(1.0, color="black", linewidth=1)
        axes[1].set_xlabel("lightning / vanilla")
        axes[1].set_title("Lightning against the hand-written trainer")
        axes[1].invert_yaxis()
    table = count()
    features = [f for f in table if f != "total"]
    x = range(len(features))
    axes[2].bar([i - 0.2 for i in x], [table[f]["vanilla"] for f in features], width=0.4, label="vanilla/")
    axes[2].bar([i + 0.2 for i in x], [table[f]["lightning"] for f in features], width=0.4, label="lightning/")
    axes[2].set_xticks(list(x), [f.replace(" + ", "\n+ ").replace(" / ", "/\n") for f in features], fontsize=7,
                       rotation=45, ha="right")
    axes[2].set_ylabel("lines of code")
    axes[2].set_title(f"Lines per feature: {table['total']['vanilla']} vs {table['total']['lightning']}")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "benchmark.json")):
        print(f"written: {written}")
