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


def test_report_puts_ratios_first_and_names_the_commit(tmp_path):
    variants = {name: {"ms_per_step": ms, "ratio_to_bare_loop": ms / 80, "ratio_to_vanilla": ms / 81,
                       "steps_timed": 100, "rounds": 4, "samples_per_s": 32000 / ms, "target_tokens_per_s": 1e5 / ms,
                       **({"validation_samples_per_s": 900.0} if "bare" not in name else {}),
                       **({"ratio_to_vanilla_by_round": [0.99, ms / 81, 1.08]} if name == "fabric" else {})}
                for name, ms in zip(report.VARIANTS, (80.0, 81.0, 82.0, 83.0, 84.0, 85.0), strict=True)}
    document = {"datetime": "2026-11-28T00:00:00", "machine_summary": "test machine",
                "commit_info": {"id": "0123456789abcdef", "dirty": False},
                "machine_info": {"python_version": "3.11"},
                "benchmarks": [{"name": "test_per_step[small]", "stats": {"median": 1.0},
                                "extra_info": {"model_size": "small", "variants": variants}},
                               {"name": "test_startup_to_first_step[vanilla]", "stats": {"median": 5.0},
                                "extra_info": {"trainer": "vanilla", "startup_seconds": 5.0}},
                               {"name": "test_startup_to_first_step[fabric]", "stats": {"median": 5.5},
                                "extra_info": {"trainer": "fabric", "startup_seconds": 5.5}},
                               {"name": "test_startup_to_first_step[lightning]", "stats": {"median": 6.0},
                                "extra_info": {"trainer": "lightning", "startup_seconds": 6.0}}]}
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(document))
    written = report.write(path, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert [p.name for p in written] == ["results.md", "results.png"] and (tmp_path / "results.png").stat().st_size
    assert text.index("Per-step overhead") < text.index("lines of code")
    assert "vanilla vs bare loop +1.2% (target within 3%: met)" in text
    assert "lightning (as configured) vs vanilla +3.7% (target within 5%: met)" in text
    assert "lightning (tuned) vs vanilla +4.9% (target within 5%: met)" in text
    assert "| start-up to first optimizer step | 5.000 s | 5.500 s | 6.000 s | 1.100x | 1.200x |" in text
    assert "at commit 0123456789 on test machine" in text
    assert "| fabric | 82.00 | 1.025x | 1.012x | 0.990 to 1.080 | +2.00 ms |" in text
    assert report.per_step_cost(document, "small") == {"vanilla": "1.012x the bare loop",
                                                        "fabric": "1.012x vanilla (+1.00 ms; rounds 0.990 to 1.080)",
                                                        "lightning": "1.037x vanilla (+3.00 ms)"}
    assert report.per_step_cost(document, "tiny") == {}


def test_the_anatomy_check_tells_parts_that_add_up_from_parts_counted_twice():
    """bench/test_anatomy.py: per round, the parts summed minus all at once; its mean against its 95% interval."""
    from bench.test_anatomy import adds_up

    disjoint = adds_up([[1.0, 1.2, 0.9, 1.1], [2.0, 1.9, 2.2, 2.0]], [3.1, 3.0, 3.0, 3.2])
    assert abs(disjoint["ms"]) <= disjoint["noise"]
    # a cost inside two parts (a bar that computes the logged metric, the logging that updates it) counts twice
    overlapping = adds_up([[1.5, 1.4, 1.6, 1.5], [1.5, 1.6, 1.4, 1.5]], [1.6, 1.5, 1.5, 1.6])
    assert round(overlapping["ms"], 6) == 1.45 and overlapping["noise"] < 0.1


def test_a_curve_point_gives_its_overhead_share_the_sign_of_its_overhead():
    """bench/test_curve.py: the share is the median overhead over the median step, not a median of per-round
    shares (with two rounds of unequal length, those two can disagree in sign)."""
    from bench.test_curve import curve_point

    point = curve_point({"bare loop": [998.0, 11.0], "vanilla": [1000.0, 10.0]})
    assert point["bare_ms"] == 504.5
    vanilla = point["vanilla"]
    assert (vanilla["ms"], vanilla["overhead_ms"]) == (505.0, 0.5)  # the rounds' differences: +2 and -1
    assert vanilla["share"] == 0.5 / 505.0  # a median of the rounds' shares (+0.2% and -10%) would be negative


def test_a_goal_met_by_the_median_alone_says_how_many_rounds_are_within_it():
    """bench/report.py: a target's verdict counts its rounds within it where not all agree with the median."""
    name = "lightning (tuned) vs vanilla"
    settled = {"excess": 0.03, "rounds": [-0.01, 0.03, 0.04]}
    assert report.verdict(name, settled) == "met" and not report.goal_unsettled(name, settled)
    straddling = {"excess": 0.03, "rounds": [-0.01, 0.03, 0.11]}
    assert report.verdict(name, straddling) == "met, but only 2 of its 3 rounds are within it (0.990x to 1.110x)"
    assert report.goal_unsettled(name, straddling)
    missed = {"excess": 0.09, "rounds": [0.04, 0.09, 0.21]}
    assert report.verdict(name, missed) == "NOT met, though 1 of its 3 rounds are within it (1.040x to 1.210x)"
    assert report.verdict(name, {"excess": 0.19, "rounds": [0.12, 0.19, 0.28]}) == "NOT met"
    # a median inside the target with no round inside it (rounds on both sides of zero, all beyond 5%)
    assert report.verdict(name, {"excess": 0.0, "rounds": [-0.08, 0.08]}) == \
        "met, but only 0 of its 2 rounds are within it (0.920x to 1.080x)"
    assert report.verdict("vanilla vs bare loop", {"excess": 0.02, "rounds": None}) == "met"


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
