"""How many fault and bad-input cases the session tried, for the line make test prints at the end: the tests
marked `fault` that ran, plus the documents the reader's fuzz tests generated."""

FUZZED = [0]  # documents fed to the reader by the hypothesis tests
RAN = [0]  # tests marked `fault` that ran (passed or failed), the fuzz tests aside
FUZZ_TESTS = [0]
