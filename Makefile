# `make demo` and `make test` each create .venv and install what they need by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# checkov pins old versions of common packages: it lives in a venv of its own
CHECKOV := $(VENV)/tools/bin/checkov
DEMO_DIR ?= demo-run

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A CPU wheel of torch 2.13.0 is on disk here; a bare `torch` would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctr demo --workdir $(DEMO_DIR)

$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/tools
	$(VENV)/tools/bin/pip install --quiet "checkov>=3.2,<4"

# ruff and mypy first (about a minute): a lint or type error fails `make test`, and so CI,
# before the suite runs.
test: $(STAMP) $(CHECKOV) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check ctr monitor pipelines tests benchmarks autoscaling
	$(VENV)/bin/mypy

# The benchmarks of benchmarks/RESULTS.md that run on this machine (about 15 minutes).
# The GPU one runs on a lent machine: python3 benchmarks/bench_train.py --deepctr --speed
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_monitor.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_serving.py
	$(PY) benchmarks/bench_train.py --device cpu --days 3 --rows-per-day 100000 --epochs 1 \
		--configs dcn,dcn_small --deepctr --cpu-bf16 --out benchmarks/results/train-cpu.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
