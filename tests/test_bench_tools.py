"""The benchmark tooling that make bench relies on: the line counter and the report writer (the benchmarks
themselves run with `pytest bench --benchmark-only`, not in make test)."""

from __future__ import annotations

import json

from bench import count_lines, report


def test_every_trainer_file_is_counted_under_a_known_feature():
    count_lines.check_every_file_is_mapped()  # raises SystemExit naming an unmapped file or an unknown feature
    table = count_lines.count()
    assert count_lines.SIDES == ("vanilla", "fabric", "lightning", "hf_trainer")
    assert set(table) == set(count_lines.FEATURES) | {"total"}
    for side in count_lines.SIDES:
        assert table["total"][side] == sum(row[side] for name, row in table.items() if name != "total") > 0
    # the exact-resume code Lightning needed is counted on its side, and the shared helpers for it on every side
    exact_resume = len(count_lines.count_file("lightning/exact_resume.py"))
    shared = sum(1 for path in count_lines.SHARED for _, feature, _ in count_lines.count_file(path)
                 if feature == "checkpointing + resume")
    assert table["checkpointing + resume"]["lightning"] >= exact_resume + shared > exact_resume


def attributed(tmp_path, monkeypatch, source: str, names: dict) -> dict[int, str]:
    """{line number: feature} of `source`, counted as vanilla/demo.py with the map `names` (file feature: wiring)."""
    (tmp_path / "vanilla").mkdir()
    (tmp_path / "vanilla" / "demo.py").write_text(source)
    monkeypatch.setattr(count_lines, "REPO", tmp_path)
    monkeypatch.setitem(count_lines.FILES, "vanilla/demo.py", ("wiring", names))
    return {n: feature for n, feature, _ in count_lines.count_file("vanilla/demo.py")}


def test_attribution_by_file_definition_call_attribute_and_trainer_flag(tmp_path, monkeypatch):
    source = ('"""Module docstring\nspanning lines."""\n\n# a comment\nx = 1  # trailing\n\n'
              'def search():\n    """Doc."""\n    return (x +\n            1)\n\n'
              'def main():\n    trainer = Trainer(max_epochs=3,\n                      precision="bf16-mixed")\n'
              '    EarlyStopping(patience=2)\n    return trainer.stop_reason\n')
    lines = attributed(tmp_path, monkeypatch, source, {
        "search": "batch-size search", "EarlyStopping()": "early stopping", ".stop_reason": "early stopping",
        "Trainer(max_epochs=)": "loop", "Trainer(precision=)": "precision"})
    assert lines == {5: "wiring", 7: "batch-size search", 9: "batch-size search", 10: "batch-size search",
                     12: "wiring", 13: "loop", 14: "precision", 15: "early stopping", 16: "early stopping"}


def test_the_transformers_trainer_counts_the_shared_helpers_it_uses_and_no_removal_for_what_it_refuses():
    files = count_lines.files_of("hf_trainer")
    assert {path for path in files if path.startswith("hf_trainer/")} == {
        path.relative_to(count_lines.REPO).as_posix() for path in (count_lines.REPO / "hf_trainer").glob("*.py")}
    # no loop, no DDP, no checkpoint file of its own: not the helpers for them
    assert set(files).isdisjoint({"shared/resumable_loader.py", "shared/process_tree.py",
                                  "shared/checkpoint_file.py", "shared/checkpoint_dict.py", "shared/launcher.py"})
    assert {"shared/logged_rows.py", "shared/loop_position.py", "shared/rng_state.py", "vanilla/loggers.py",
            "vanilla/signal_connector.py"} <= set(files)
    rng = {feature for _, feature, _ in count_lines.count_file("shared/rng_state.py", "hf_trainer")}
    assert rng == {"checkpointing + resume"}  # an epoch's starting generators, not the gather of every rank's
    positions = {feature for _, feature, _ in count_lines.count_file("shared/loop_position.py", "hf_trainer")}
    assert positions == {"loop"}  # num_train_batches alone, not LoopPosition's checkpoint state
    table = count_lines.count()
    for feature in count_lines.NOT_YET["hf_trainer"]:
        assert count_lines.removed(table, feature, "hf_trainer") == "refused (not yet)"
    assert "refused rows left out" in count_lines.removed(table, "total", "hf_trainer")
    assert count_lines.removed(table, "total", "lightning").endswith("%)")
    header, rule, *rows = count_lines.markdown(table).split("\n\n")[0].splitlines()
    assert header.count("|") - 1 == 1 + 4 + 3  # the feature, four rungs, three removals
    assert len(rows) == len(table) and all(row.count("|") == header.count("|") for row in rows)
    assert "refuses batch-size search so far, with a one-line error (counted as wiring): that row holds" \
        in count_lines.caveats()
    precision = {text.strip() for _, feature, text in count_lines.count_file("hf_trainer/qg_trainer.py", "hf_trainer")
                 if feature == "precision"}
    assert "with self.accelerator.autocast():" in precision
    assert "data parallel / DDP (torchrun on one node" in count_lines.caveats()  # built in part, and says so


def test_a_flag_scoped_to_a_definition_wins_over_the_unscoped_one(tmp_path, monkeypatch):
    source = ('def arguments():\n    return Args(\n        epochs=3,\n        cpu=True)\n\n\n'
              'def tester():\n    return Args(epochs=1,\n                cpu=True)\n')
    lines = attributed(tmp_path, monkeypatch, source, {
        "tester": "test phase", "Args(epochs=)": "loop", "Args(cpu=)": "data parallel / DDP",
        "tester.Args(cpu=)": "test phase", "tester.Args(epochs=)": "test phase"})
    assert lines == {1: "wiring", 2: "wiring", 3: "loop", 4: "data parallel / DDP",
                     7: "test phase", 8: "test phase", 9: "test phase"}


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


def alternating(n: int, mean: float, spread: float) -> list[float]:
    """mean + spread, mean - spread, ...: n values (n even) whose mean is `mean`."""
    return [mean + spread * (-1) ** i for i in range(n)]


def shifted(steps: list[float], mean: float, spread: float) -> list[float]:
    return [a + b for a, b in zip(steps, alternating(len(steps), mean, spread), strict=True)]


def turns_benchmarks() -> list[dict]:
    """test_fixed_cost and the curve's default-model point as bench/test_fixed_cost.py and test_curve.py write them,
    with steps chosen so that every verdict shows: on the default model vanilla within 3% of the bare loop (met),
    Lightning as configured across its 5% goal (not decided), tuned beyond it (NOT met); on the tiny model, tuned
    equal to the barebones floor within the noise; the transformers Trainer timed on the tiny model only."""
    vanilla = alternating(40, 100.0, 1.0)
    small = {"vanilla": vanilla, "bare loop": shifted(vanilla, -2.0, 0.5), "fabric": shifted(vanilla, 0.5, 1.0),
             "lightning (barebones)": shifted(vanilla, 1.0, 1.0),
             "lightning (as configured)": shifted(vanilla, 4.8, 2.0), "lightning (tuned)": shifted(vanilla, 8.0, 1.0)}
    bare = alternating(40, 7.0, 0.1)
    tiny = {"bare loop": bare, "vanilla": shifted(bare, 0.3, 0.1), "fabric": shifted(bare, 0.8, 0.1),
            "lightning (barebones)": shifted(bare, 1.2, 0.2), "lightning (as configured)": shifted(bare, 2.5, 0.2),
            "lightning (tuned)": shifted(bare, 1.25, -0.2), "hf_trainer": shifted(bare, 2.0, 0.2)}
    return [{"name": "test_fixed_cost", "stats": {"median": 1.0},
             "extra_info": {"configuration": "tiny model, batch 1", "steps": 40, "step_ms": tiny}},
            {"name": "test_overhead_curve[small-batch32]", "stats": {"median": 1.0},
             "extra_info": {"model_size": "small", "batch_size": 32, "steps": 40, "step_ms": small}}]


def report_document() -> dict:
    return {"datetime": "2026-11-28T00:00:00", "machine_summary": "test machine",
            "commit_info": {"id": "0123456789abcdef", "dirty": False}, "machine_info": {"python_version": "3.11"},
            "benchmarks": [per_step_benchmark("small"), per_step_benchmark("tiny"), *turns_benchmarks(),
                           {"name": "test_startup_to_first_step[vanilla]", "stats": {"median": 5.0},
                            "extra_info": {"trainer": "vanilla", "startup_seconds": 5.0}},
                           {"name": "test_startup_to_first_step[fabric]", "stats": {"median": 5.5},
                            "extra_info": {"trainer": "fabric", "startup_seconds": 5.5}},
                           {"name": "test_startup_to_first_step[lightning]", "stats": {"median": 6.0},
                            "extra_info": {"trainer": "lightning", "startup_seconds": 6.0}},
                           {"name": "test_startup_to_first_step[hf_trainer]", "stats": {"median": 7.0},
                            "extra_info": {"trainer": "hf_trainer", "startup_seconds": 7.0}}]}


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
    # the first table on the page is the answer, from the runs in turns: a row per rung, the fixed cost first
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    assert lines[start:end] == [
        "| rung | fixed cost: ms per step over the bare loop (tiny model, batch 1, 40 steps) | default model, batch "
        "32: ratio to the hand-written trainer (40 steps) |",
        "|---|---:|---:|",
        "| bare loop, the floor: no trainer | 7.00 ms in all | 0.980x (0.978 to 0.982), -2.00 ± 0.16 ms |",
        "| vanilla (by hand) | +0.30 ± 0.03 ms | 100.0 ms per step |",
        "| fabric | +0.80 ± 0.03 ms | 1.005x (1.002 to 1.008), +0.50 ± 0.33 ms |",
        "| lightning (barebones): Lightning's own floor | +1.20 ± 0.07 ms | 1.010x (1.007 to 1.013), +1.00 ± 0.33 ms |",
        "| lightning (as configured) | +2.50 ± 0.07 ms | 1.048x (1.041 to 1.055), +4.80 ± 0.65 ms |",
        "| lightning (tuned) | +1.25 ± 0.07 ms | 1.080x (1.077 to 1.083), +8.00 ± 0.33 ms |",
        "| hf_trainer: transformers' Seq2SeqTrainer | +2.00 ± 0.07 ms | not timed |"]
    # each goal by its interval: wholly within, across its edge (with the steps that would decide it), beyond
    assert ("vanilla against bare loop on the default model, goal at most 3% slower: 1.020x (1.019 to 1.022), "
            "met;") in text
    assert ("lightning (as configured) against vanilla on the default model, goal at most 5% slower: 1.048x (1.041 to "
            "1.055), not decided at this machine's noise (about 428 steps in turns would decide it, 40 were "
            "taken);") in text
    assert ("lightning (tuned) against vanilla on the default model, goal at most 5% slower: 1.080x (1.077 to "
            "1.083), NOT met;") in text
    assert "Lightning tuned against its barebones floor where the step is nothing: +0.05 ± 0.13 ms per step, " \
        "not told apart from it at this noise (its interval holds zero)." in text
    assert "Every fixed-cost interval is within ±0.3 ms." in text
    assert text.index("## The answer") < text.index("## When it matters") < text.index("## Appendix") \
        < text.index("### Whole runs, wall clock") < text.index("### Per-step overhead") < text.index("lines of code")
    # the curve's point against the fixed cost: marked where it differs by more than the two intervals
    assert "| small | 32 | 98.0 | +2.00 ± 0.16 ms (≠) |" in text
    assert "| start-up to first optimizer step | 5.000 s | 5.500 s | 6.000 s | 7.000 s | 1.100x | 1.200x | 1.400x |" \
        in text
    assert "| training samples/s | 32,000/s | 31,373/s | 30,476/s | - | 0.980x | 0.952x | - |" in text  # no hf_trainer
    assert "| fabric | 81.60 | 1.052x | 1.020x | 0.990 to 1.050 | +4.00 ms |" in text
    assert report.turns_cost(document, "small")["lightning (as configured)"] == "1.048x (1.041 to 1.055) vanilla"
    assert report.turns_cost(document, "tiny")["vanilla"] == "+0.30 ± 0.03 ms over the bare loop"
    assert report.turns_cost(document, "tiny")["hf_trainer"] == "+2.00 ± 0.07 ms over the bare loop"
    assert "hf_trainer" not in report.turns_cost(document, "small")
    assert report.turns_cost({"benchmarks": []}, "tiny") == {}


def test_every_benchmark_run_ends_with_the_headline_figures(monkeypatch):
    """`pytest bench --benchmark-only` (no JSON, no report) prints the answer's table, one verdict a line, at its end
    (bench/conftest.py's terminal summary, from the session's own results)."""
    from bench import conftest

    class Bench:  # pytest-benchmark's Metadata, as far as the hook uses it
        def __init__(self, entry):
            self.entry = entry

        def as_dict(self, include_data):
            assert not include_data
            return self.entry

    class Terminal:
        def __init__(self):
            self.lines = []

        def write_sep(self, sep, title):
            self.lines.append(f"{sep * 3} {title}")

        def write_line(self, line):
            self.lines.append(line)

    class Config:
        _benchmarksession = type("Session", (), {"benchmarks": [Bench(b) for b in report_document()["benchmarks"]]})

        def getoption(self, name):
            assert name == "--bench-full"
            return False

    terminal = Terminal()
    monkeypatch.setattr(conftest, "machine", lambda: "test machine")
    conftest.pytest_terminal_summary(terminal, Config())
    assert terminal.lines[0] == "=== headline figures (quick rounds, test machine); the whole report: make bench"
    assert "| lightning (tuned) | +1.25 ± 0.07 ms | 1.080x (1.077 to 1.083), +8.00 ± 0.33 ms |" in terminal.lines
    assert "- lightning (tuned) against vanilla on the default model, goal at most 5% slower: 1.080x (1.077 to " \
        "1.083), NOT met" in terminal.lines
    assert sum(line.startswith("- ") for line in terminal.lines) == 4  # three goals and the floor
    assert any(line.startswith("| small | 32 | 98.0 | +2.00 ± 0.16 ms (≠) |") for line in terminal.lines)
    assert all(not line.startswith("Verdicts: ") for line in terminal.lines)
    empty = Terminal()
    Config._benchmarksession.benchmarks = []
    conftest.pytest_terminal_summary(empty, Config())
    assert empty.lines == []  # nothing measured (a run of one benchmark that fails): nothing to print


def test_the_steps_that_would_decide_a_goal_shrink_its_interval_past_the_goal():
    """bench/intervals.py: an interval narrows as 1/sqrt(steps); where it holds the goal, the steps it would take
    to lie on one side at the same mean and spread; none where it lies on one side already."""
    from bench.intervals import paired, steps_to_decide

    difference = paired([10.0, 12.0, 10.0, 12.0], [9.0, 9.0, 9.0, 9.0])
    assert (difference["ms"], difference["n"]) == (2.0, 4)
    assert round(difference["half_width"], 3) == 1.837  # t(3 degrees) 3.182 x stdev 1.155 / sqrt(4)
    assert steps_to_decide(difference, 2.0 + difference["half_width"] / 2) == 16  # half the gap: four times the steps
    assert steps_to_decide(difference, 2.0 + 2 * difference["half_width"]) is None


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
