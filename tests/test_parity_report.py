"""The parity report's bookkeeping (tests/parity_report.py, and the session-end check in conftest.py): every
comparison it expects is one the parity suite makes, bitwise comparisons and behaviour checks are counted apart, and
a session fails when an expected comparison was not recorded -- in a parity run (`-m parity`, `make parity`) any
of them, otherwise those of the tests selected -- while `make check` and single tests are not held to the rest.
The sessions below select parity tests but run none of their bodies, so they take seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.parity_report import BEHAVIOUR, BITWISE, EXPECTED, PARITY_TESTS, Row, counts, record_parity, required

ENV = dict(os.environ, PYTHONWARNINGS="ignore")
BF16_ROWS = ["bf16-mixed, 2 epochs: final weights", "bf16-mixed: metrics.csv, predictions, test scores"]


def pytest_session(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          env=env or ENV, capture_output=True, text=True, timeout=300)


def test_every_expected_comparison_belongs_to_a_parity_test_and_every_parity_test_records_one():
    collected = pytest_session("--collect-only", "-q", "-m", "parity")
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    parity_tests = {line.strip() for line in collected.stdout.splitlines() if "::" in line}
    assert parity_tests and all(test.startswith(f"{PARITY_TESTS}::") for test in parity_tests), parity_tests
    assert {expected.test for expected in EXPECTED.values()} == parity_tests
    assert {expected.kind for expected in EXPECTED.values()} == {BITWISE, BEHAVIOUR}


def test_a_comparison_not_listed_is_refused():
    with pytest.raises(ValueError, match="not in tests/parity_report.py's EXPECTED"):
        record_parity("a comparison nobody listed", {}, True)


def test_a_parity_run_requires_every_comparison_and_other_sessions_those_of_their_tests():
    one_test = EXPECTED["bf16-mixed: metrics.csv, predictions, test scores"].test
    assert required(set(), parity_run=True) == list(EXPECTED)
    assert required({one_test}, parity_run=False) == BF16_ROWS
    assert required({"tests/test_faults.py::test_something"}, parity_run=False) == []


def test_bitwise_comparisons_and_behaviour_checks_are_counted_apart_with_what_did_not_run():
    bitwise = [f for f, e in EXPECTED.items() if e.kind == BITWISE][:3]
    behaviour = [f for f, e in EXPECTED.items() if e.kind == BEHAVIOUR][:1]
    rows = [Row(bitwise[0], {}, True, BITWISE), Row(bitwise[1], {}, False, BITWISE),
            Row(behaviour[0], {}, True, BEHAVIOUR)]
    assert counts(rows, [bitwise[2]]) == ["Bit for bit: 1 of 3 comparisons equal; 1 did not run.",
                                          "Behaviour: 1 of 1 checks agree."]
    # scripts/make_docs.py quotes the first "N of M comparisons equal" as the README's bit-identical count
    assert re.search(r"(\d+) of (\d+) comparisons equal", "\n".join(counts(rows[:1], []))).groups() == ("1", "1")


# Not a skipped test of this suite: a plugin for the pytest sessions below, which skips (and fails) the parity tests
# they select on purpose, since what is tested is that the report's check fails a session whose comparisons did not
# run.
SKIP_BODIES = """
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):  # before any fixture: no trainer runs
    if item.name == "test_bf16_mixed_gives_equal_weights":
        raise RuntimeError("a fixture failed (simulated)")
    pytest.skip("skipped (simulated)")
"""


def session_without_bodies(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """A pytest session in which every selected test is skipped before its fixtures, but one that errors."""
    (tmp_path / "skip_bodies.py").write_text(SKIP_BODIES)
    return pytest_session("-p", "skip_bodies", *args, env=dict(ENV, PYTHONPATH=str(tmp_path)))


def not_run(result: subprocess.CompletedProcess) -> list[str]:
    """The features of the table's DID NOT RUN rows, in order (a row is the feature, padded, then its cells)."""
    return [max((feature for feature in EXPECTED if line.startswith(feature + " ")), key=len, default=line)
            for line in result.stdout.splitlines() if line.rstrip().endswith("DID NOT RUN")]


def test_a_parity_run_fails_on_a_comparison_deselected_or_skipped(tmp_path):
    report = tmp_path / "report"
    result = session_without_bodies(tmp_path, PARITY_TESTS, "-m", "parity", "-k", "not ddp and not bf16",
                                    f"--parity-report={report}")
    assert result.returncode == 1, result.stdout[-3000:]  # without the check: skipped and deselected, status 0
    assert re.search(r" 11 skipped, 14 deselected in ", result.stdout), result.stdout[-3000:]  # nothing failed
    assert f"no report written to {report}" in result.stdout and not report.exists()
    assert not_run(result) == list(EXPECTED), result.stdout[-3000:]  # DDP and bf16 deselected, the others skipped
    bitwise = sum(expected.kind == "bitwise" for expected in EXPECTED.values())
    assert f"FAILED: {len(EXPECTED)} expected parity comparison(s) did not run" in result.stdout
    assert f"Bit for bit: 0 of {bitwise} comparisons equal; {bitwise} did not run." in result.stdout


def test_a_skipped_parity_test_fails_a_session_that_selected_it(tmp_path):
    result = session_without_bodies(tmp_path, EXPECTED["fine-tuning: predictions.jsonl, test scores"].test)
    assert result.returncode == 1, result.stdout[-3000:]  # without the check: 1 skipped, status 0
    assert "1 skipped" in result.stdout
    assert not_run(result) == ["fine-tuning --model DIR, 5 steps: final weights",
                               "fine-tuning: predictions.jsonl, test scores"], result.stdout[-3000:]
    assert f"{len(EXPECTED) - 2} more of the suite's {len(EXPECTED)} comparisons were not selected in this session." \
        in result.stdout


def test_make_checks_selection_is_not_held_to_the_parity_suite():
    result = pytest_session(PARITY_TESTS, "-m", "not slow")  # make check: every parity test is slow
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout[-3000:]
    assert "DID NOT RUN" not in result.stdout and "parity:" not in result.stdout


def test_a_parity_test_whose_fixture_failed_leaves_no_clean_count(tmp_path):
    result = session_without_bodies(tmp_path, EXPECTED["bf16-mixed: metrics.csv, predictions, test scores"].test)
    assert result.returncode == 1 and "1 error" in result.stdout, result.stdout[-3000:]
    assert not_run(result) == BF16_ROWS
    assert "Bit for bit: 0 of 2 comparisons equal; 2 did not run." in result.stdout
