# Quick start: `make demo`, `make test`. Two tested environments (README "Install"):
#   current (default): .venv,        requirements/current.txt (torch 2.14.1 + transformers 5)
#   legacy:            .venv-legacy, requirements/legacy.txt  (Sa2VA v1: torch 2.5.1 + xtuner 0.2.0
#                                                                + transformers 4.48.0)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LEGACY_VENV := .venv-legacy
LEGACY_PY := $(LEGACY_VENV)/bin/python
LEGACY_STAMP := $(LEGACY_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup setup-legacy test test-legacy demo demo-cycle clean sample-data

setup: $(STAMP)
setup-legacy: $(LEGACY_STAMP)

# Re-install only when setup.py or the tested set changes; otherwise `make setup` is a no-op.
$(STAMP): setup.py requirements/current.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/current.txt -e '.[dev]'
	touch $@

$(LEGACY_STAMP): setup.py requirements/legacy.txt
	test -x $(LEGACY_PY) || $(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_PY) -m pip install --quiet -r requirements/legacy.txt -e '.[dev,legacy]'
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-legacy: setup-legacy
	$(LEGACY_PY) -m pytest $(PYTEST_ARGS)

sample-data: setup
	$(PY) tools/make_sample_data.py --out data/sample

demo: setup
	$(PY) tools/demo.py --work-dir work_dirs/demo

# The mask <-> caption cycle (loop 1 + RefCOCO) on the tiny model: loss before /
# after on fixed samples (cycle_metrics.json) and a PNG per sample.
demo-cycle: setup
	$(PY) tools/cycle_demo.py --work-dir work_dirs/demo_cycle

clean:
	rm -rf work_dirs build *.egg-info
