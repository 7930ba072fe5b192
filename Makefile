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

# The mask <-> caption cycle (loop 1 + RefCOCO) on the tiny model: loss before /
# after on fixed samples (cycle_metrics.json) and a PNG per sample.
.PHONY: demo-cycle
demo-cycle: setup
	$(PY) tools/cycle_demo.py --work-dir work_dirs/demo_cycle
