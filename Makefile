# Two commands on a fresh machine (Python 3.11 and make): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): requirements.txt
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The main job on the embedded synthetic data: train, stop early, test the best checkpoint, export.
demo: $(STAMP)
	$(PY) vanilla/train.py --overwrite

# The whole suite.
test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache
