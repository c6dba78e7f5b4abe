# Two commands on a fresh machine (Python 3.11 and make): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: venv demo test check parity bench docs gpu-check clean

venv: $(STAMP)

$(STAMP): requirements.txt
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The main job on the embedded synthetic data, once per trainer (train, stop early, test the best checkpoint,
# export), each in a new version directory under runs/, then the three runs side by side.
demo: $(STAMP)
	$(PY) scripts/compare_runs.py

# The linter, then the whole suite.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

# The edit-test loop: the linter and the fast tests (no end-to-end training).
check: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow"

# Only the parity suite (the three trainers, bit for bit); prints the report and writes it, with the
# loss-curve plot, to docs/parity/; then the pages that quote it.
parity: $(STAMP)
	$(PY) -m pytest -m parity --parity-report=docs/parity
	$(PY) scripts/make_docs.py

# The benchmarks (bench/, pytest-benchmark) with the full rounds (about 30 minutes on 2 CPU cores; `pytest bench
# --benchmark-only` alone takes the quick rounds, about 6, and prints the headline figures), then bench/results.md
# and the charts from their JSON.
bench: $(STAMP)
	$(PY) -m pytest bench --benchmark-only --bench-full -p no:cacheprovider --benchmark-json bench/benchmark.json
	$(PY) bench/report.py bench/benchmark.json
	$(PY) scripts/make_docs.py

# The pages generated from the code and the reports: docs/side-by-side.md and README.md's headline figures.
docs: $(STAMP)
	$(PY) scripts/make_docs.py

# On a CUDA GPU, in at most eight minutes: what the CPU suite cannot check (the trainers' determinism on CUDA,
# 16-mixed and bf16-mixed, a real out-of-memory in the batch-size search, --strategy dp, tokens/s and MFU), written
# to docs/gpu.md. Without a GPU it says so in one line and changes nothing.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

clean:
	rm -rf runs .pytest_cache
