"""The benchmark tooling that make bench relies on: the line counter and the report writer (the benchmarks
themselves run with `pytest bench --benchmark-only`, not in make test)."""

from __future__ import annotations

import json

from bench import count_lines, report


def test_every_trainer_file_is_counted_under_a_known_feature():
    count_lines.check_every_file_is_mapped()  # raises SystemExit naming an unmapped file or an unknown feature
    table = count_lines.count()
    assert set(table) == set(count_lines.FEATURES) | {"total"}
    for side in count_lines.SIDES:
        assert table["total"][side] == sum(row[side] for name, row in table.items() if name != "total") > 0
    # the exact-resume code Lightning needed is counted on its side, and the shared helpers for it on every side
    exact_resume = len(count_lines.count_file("lightning/exact_resume.py"))
    shared = sum(1 for path in count_lines.SHARED for _, feature, _ in count_lines.count_file(path)
                 if feature == "checkpointing + resume")
    assert table["checkpointing + resume"]["lightning"] >= exact_resume + shared > exact_resume


def test_attribution_by_file_definition_call_attribute_and_trainer_flag(tmp_path, monkeypatch):
    source = ('"""Module docstring\nspanning lines."""\n\n# a comment\nx = 1  # trailing\n\n'
              'def search():\n    """Doc."""\n    return (x +\n            1)\n\n'
              'def main():\n    trainer = Trainer(max_epochs=3,\n                      precision="bf16-mixed")\n'
              '    EarlyStopping(patience=2)\n    return trainer.stop_reason\n')
    (tmp_path / "vanilla").mkdir()
    (tmp_path / "vanilla" / "demo.py").write_text(source)
    monkeypatch.setattr(count_lines, "REPO", tmp_path)
    monkeypatch.setitem(count_lines.FILES, "vanilla/demo.py", ("wiring", {
        "search": "batch-size search", "EarlyStopping()": "early stopping", ".stop_reason": "early stopping",
        "Trainer(max_epochs=)": "loop", "Trainer(precision=)": "precision"}))
    lines = {n: feature for n, feature, _ in count_lines.count_file("vanilla/demo.py")}
    assert lines == {5: "wiring", 7: "batch-size search", 9: "batch-size search", 10: "batch-size search",
                     12: "wiring", 13: "loop", 14: "precision", 15: "early stopping", 16: "early stopping"}


# per-round ratios to vanilla, six rounds each (the interval: the lowest to the highest round, 96.9%), chosen so
# that every standing shows: Fabric above 1.0 on the tiny model and across it on the default one; Lightning as
# configured across its 5% goal on the default model; tuned, beyond it on the tiny model and within it on the default
BY_ROUND = {"small": {"bare loop": [0.95, 0.96, 0.97, 0.97, 0.98, 0.99], "vanilla": [1.0] * 6,
                      "fabric": [0.99, 1.0, 1.01, 1.03, 1.04, 1.05],
                      "lightning (defaults)": [1.0, 1.02, 1.04, 1.04, 1.06, 1.08],
                      "lightning (as configured)": [1.02, 1.03, 1.04, 1.06, 1.07, 1.08],
                      "lightning (tuned)": [1.0, 1.01, 1.02, 1.02, 1.03, 1.04]},
            "tiny": {"bare loop": [0.98, 0.99, 1.0, 1.0, 1.01, 1.02], "vanilla": [1.0] * 6,
                     "fabric": [1.01, 1.02, 1.03, 1.03, 1.04, 1.06],
                     "lightning (defaults)": [1.1, 1.15, 1.2, 1.2, 1.25, 1.3],
                     "lightning (as configured)": [1.1, 1.15, 1.2, 1.2, 1.25, 1.3],
                     "lightning (tuned)": [1.08, 1.1, 1.12, 1.14, 1.16, 1.18]}}
VANILLA_MS = {"small": 80.0, "tiny": 10.0}


def per_step_benchmark(size: str) -> dict:
    """A test_per_step entry as bench/test_overhead.py writes it, from BY_ROUND: each ratio the median round's."""
    import statistics

    ratios = {name: statistics.median(rounds) for name, rounds in BY_ROUND[size].items()}
    variants = {name: {"ms_per_step": VANILLA_MS[size] * ratio, "ratio_to_bare_loop": ratio / ratios["bare loop"],
                       "ratio_to_vanilla": ratio, "ratio_to_vanilla_by_round": BY_ROUND[size][name],
                       "steps_timed": 100, "rounds": 6, "samples_per_s": 32000 / ratio,
                       "target_tokens_per_s": 1e5 / ratio,
                       **({"validation_samples_per_s": 900.0} if "bare" not in name else {})}
                for name, ratio in ratios.items()}
    return {"name": f"test_per_step[{size}]", "stats": {"median": 1.0},
            "extra_info": {"model_size": size, "parameters": {"small": 1_120_256, "tiny": 70_016}[size],
                           "variants": variants}}


def report_document() -> dict:
    curve_point = {"bare_ms": 9.0} | {t: {"ms": 10.0, "overhead_ms": 1.0, "share": 0.1} for t in report.CURVE_TRAINERS}
    return {"datetime": "2026-11-28T00:00:00", "machine_summary": "test machine",
            "commit_info": {"id": "0123456789abcdef", "dirty": False}, "machine_info": {"python_version": "3.11"},
            "benchmarks": [per_step_benchmark("small"), per_step_benchmark("tiny"),
                           {"name": "test_overhead_curve[tiny-8]", "stats": {"median": 1.0},
                            "extra_info": {"model_size": "tiny", "batch_size": 8, "steps": 10,
                                           "point": curve_point}},
                           {"name": "test_startup_to_first_step[vanilla]", "stats": {"median": 5.0},
                            "extra_info": {"trainer": "vanilla", "startup_seconds": 5.0}},
                           {"name": "test_startup_to_first_step[fabric]", "stats": {"median": 5.5},
                            "extra_info": {"trainer": "fabric", "startup_seconds": 5.5}},
                           {"name": "test_startup_to_first_step[lightning]", "stats": {"median": 6.0},
                            "extra_info": {"trainer": "lightning", "startup_seconds": 6.0}}]}


def test_report_opens_with_the_answer_table_and_its_verdict_and_names_the_commit(tmp_path):
    document = report_document()
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(document))
    written = report.write(path, tmp_path)
    text = (tmp_path / "results.md").read_text()
    lines = text.splitlines()
    assert [p.name for p in written] == ["results.md", "results.png", "curve.png"]
    assert all(p.stat().st_size for p in written)
    assert "at commit 0123456789 on test machine" in lines[2]
    # the first table on the page is the answer: a row per rung, the tiny model's column before the default one's
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    assert lines[start:end] == [
        "| rung | tiny model, 70,016 parameters, 6 rounds | default model, 1,120,256 parameters, 6 rounds |",
        "|---|---:|---:|",
        "| bare loop, the floor: no trainer | 1.000x (0.980 to 1.020), +0.00 ms | 0.970x (0.950 to 0.990), -2.40 ms |",
        "| fabric | 1.030x (1.010 to 1.060), +0.30 ms | 1.020x (0.990 to 1.050), +1.60 ms |",
        "| lightning (as configured) | 1.200x (1.100 to 1.300), +2.00 ms | 1.050x (1.020 to 1.080), +4.00 ms |",
        "| lightning (tuned) | 1.130x (1.080 to 1.180), +1.30 ms | 1.020x (1.000 to 1.040), +1.60 ms |"]
    assert "of 6 rounds the lowest to the highest, 96.9%" in text
    # the paragraphs: title, provenance, heading, table, the line under it, then the verdict
    verdict = text.split("\n\n")[5]
    assert verdict == (
        "Fabric is slower than the hand-written trainer on the tiny model and is not told apart from the "
        "hand-written trainer on the default model. Lightning as configured is slower than the hand-written trainer "
        "on the tiny model and straddles its 5% goal on the default model, not decided at this machine's noise; "
        "tuned, it misses its 5% goal on the tiny model and meets its 5% goal on the default model.")
    assert text.index("## The answer") < text.index("## When it matters") < text.index("## Appendix") \
        < text.index("### Per-step overhead") < text.index("lines of code")
    # the appendix's targets by the same intervals: the bare loop's rounds inverted for vanilla over it
    assert ("vanilla vs bare loop 1.031x, interval 1.010 to 1.053, target within 3%: not decided at this "
            "machine's noise") in text
    assert ("lightning (as configured) vs vanilla 1.050x, interval 1.020 to 1.080, target within 5%: not decided "
            "at this machine's noise") in text
    assert "lightning (tuned) vs vanilla 1.020x, interval 1.000 to 1.040, target within 5%: met;" in text
    assert "lightning (tuned) vs vanilla, tiny model 1.130x, interval 1.080 to 1.180, target within 5%: NOT met." \
        in text
    assert "| start-up to first optimizer step | 5.000 s | 5.500 s | 6.000 s | 1.100x | 1.200x |" in text
    assert "| fabric | 81.60 | 1.052x | 1.020x | 0.990 to 1.050 | +4.00 ms |" in text
    assert report.per_step_cost(document, "small") == {"vanilla": "1.031x the bare loop",
                                                        "fabric": "1.020x vanilla (+1.60 ms; rounds 0.990 to 1.050)",
                                                        "lightning": "1.050x vanilla (+4.00 ms; rounds 1.020 to 1.080)"}
    assert report.per_step_cost({"benchmarks": []}, "tiny") == {}


def test_the_interval_of_the_median_round_comes_from_the_rounds_order():
    """bench/report.py median_interval: the k-th lowest to the k-th highest round, k the largest whose coverage
    1 - 2 P(Binomial(n, 1/2) < k) is at least 95%; with too few rounds, the lowest to the highest at its lower
    coverage."""
    ten = report.median_interval([1.10, 0.90, 1.00, 1.01, 0.99, 1.02, 0.98, 1.03, 0.97, 1.04])
    assert (ten["low"], ten["high"], ten["k"]) == (0.97, 1.04, 2)  # the 2nd lowest and highest: 0.90 and 1.10 out
    assert round(ten["coverage"], 4) == round(1 - 2 * 11 / 1024, 4) == 0.9785
    six = report.median_interval([1.2, 1.0, 1.1, 1.3, 0.9, 1.05])
    assert (six["low"], six["high"], six["k"], round(six["coverage"], 4)) == (0.9, 1.3, 1, 0.9688)
    four = report.median_interval([1.0, 1.1, 1.2, 1.3])
    assert (four["low"], four["high"], four["coverage"]) == (1.0, 1.3, 0.875)  # no 95% interval from 4 rounds
    assert report.median_interval([1.0]) is None


def test_a_goal_is_met_only_where_its_whole_interval_is_within_it():
    """bench/report.py standing and verdict: an interval across the goal's edge is not decided, whatever its
    median, and one wholly beyond it is not met; against 1.0, an interval holding it is not told apart."""
    interval = {"low": 0.99, "high": 1.06}
    assert report.standing(interval, 0.05) == "not decided" and report.standing(interval) == "across"
    assert report.standing({"low": 0.96, "high": 1.05}, 0.05) == "met"  # the edge itself is within
    assert report.standing({"low": 1.051, "high": 1.2}, 0.05) == "over"
    assert report.standing({"low": 0.8, "high": 0.94}, 0.05) == "under"
    assert report.standing({"low": 1.01, "high": 1.2}) == "above"
    assert report.standing({"low": 0.8, "high": 0.99}) == "below"
    assert report.standing(None, 0.05) is None
    name = "lightning (tuned) vs vanilla"
    # a median within 5% with one round beyond it: six rounds, so the interval reaches that round
    straddling = {"ratio": 1.03, "by_round": [1.01, 1.02, 1.03, 1.03, 1.04, 1.11]}
    assert report.verdict(name, straddling) == "not decided at this machine's noise"
    assert report.goal_unsettled(name, straddling)
    settled = {"ratio": 1.02, "by_round": [0.99, 1.01, 1.02, 1.02, 1.03, 1.04]}
    assert report.verdict(name, settled) == "met" and not report.goal_unsettled(name, settled)
    missed = {"ratio": 1.15, "by_round": [1.06, 1.1, 1.15, 1.15, 1.2, 1.3]}
    assert report.verdict(name, missed) == "NOT met" and report.goal_unsettled(name, missed)
    assert report.verdict("vanilla vs bare loop", {"ratio": 1.02, "by_round": None}) == \
        "met by the median alone, with no rounds"


def test_the_verdict_says_both_models_where_they_agree():
    """bench/report.py verdict_sentences: two sentences, Fabric's then Lightning's, a standing shared by both
    models said once."""
    def cell(low, high, goal=None):
        return {"ratio": (low + high) / 2, "ms": 0.0, "goal": goal, "interval": {"low": low, "high": high}}

    cells = {"fabric": {"tiny": cell(0.98, 1.03), "small": cell(0.97, 1.02)},
             "lightning (as configured)": {"tiny": cell(1.1, 1.2), "small": cell(1.06, 1.1, 0.05)},
             "lightning (tuned)": {"tiny": cell(1.03, 1.07, 0.05), "small": cell(1.01, 1.04, 0.05)}}
    assert report.verdict_sentences(cells) == [
        "Fabric is not told apart from the hand-written trainer on both models.",
        "Lightning as configured is slower than the hand-written trainer on the tiny model and misses its 5% goal on "
        "the default model; tuned, it straddles its 5% goal on the tiny model, not decided at this machine's noise, "
        "and meets its 5% goal on the default model."]


def test_the_anatomy_check_tells_parts_that_add_up_from_parts_counted_twice():
    """bench/test_anatomy.py: per round, the parts summed minus all at once; its mean against its 95% interval."""
    from bench.test_anatomy import adds_up

    disjoint = adds_up([[1.0, 1.2, 0.9, 1.1], [2.0, 1.9, 2.2, 2.0]], [3.1, 3.0, 3.0, 3.2])
    assert abs(disjoint["ms"]) <= disjoint["noise"]
    # a cost inside two parts (a bar that computes the logged metric, the logging that updates it) counts twice
    overlapping = adds_up([[1.5, 1.4, 1.6, 1.5], [1.5, 1.6, 1.4, 1.5]], [1.6, 1.5, 1.5, 1.6])
    assert round(overlapping["ms"], 6) == 1.45 and overlapping["noise"] < 0.1


def test_the_readme_gives_a_ratio_and_ms_that_agree_in_sign():
    """bench/report.py per_step_cost: the ms is the median ratio's excess over vanilla's step, not a difference of
    pooled medians (which can have the other sign where the rounds drift)."""
    variants = {"bare loop": {"ms_per_step": 90.0, "ratio_to_bare_loop": 1.0, "ratio_to_vanilla": 0.95},
                "vanilla": {"ms_per_step": 100.0, "ratio_to_bare_loop": 1.05, "ratio_to_vanilla": 1.0},
                "fabric": {"ms_per_step": 99.0, "ratio_to_bare_loop": 1.06, "ratio_to_vanilla": 1.01,
                           "ratio_to_vanilla_by_round": [0.98, 1.01, 1.03]}}
    document = {"benchmarks": [{"name": "test_per_step[small]", "stats": {},
                                "extra_info": {"model_size": "small", "variants": variants}}]}
    assert report.per_step_cost(document, "small")["fabric"] == "1.010x vanilla (+1.00 ms; rounds 0.980 to 1.030)"
