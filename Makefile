# Quick start: `make demo`, `make test`. Everything runs inside .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test demo clean sample-data

setup: $(STAMP)

# Re-install only when the dependency list changes; otherwise `make setup` is a no-op.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

sample-data: setup
	$(PY) tools/make_sample_data.py --out data/sample

demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo

clean:
	rm -rf work_dirs build *.egg-info
