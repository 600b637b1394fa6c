# `make run` and `make test` are all a newcomer needs (Python 3.10+ and Java 17 on the machine).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONF ?= conf/local.yaml
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test test-fast bench lint clean check-java package

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

check-java: ## fail in one line if Spark's Java runtime is missing
	@if [ -n "$$JAVA_HOME" ] && [ -x "$$JAVA_HOME/bin/java" ]; then exit 0; fi; \
	command -v java >/dev/null 2>&1 || { echo "error: Java not found: Spark needs a Java 17 runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) or set JAVA_HOME" >&2; exit 1; }

$(STAMP): requirements.lock setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: Python 3.10+ is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install the pinned dependencies

run: check-java $(STAMP) ## generate the embedded dataset and run the whole pipeline locally (outputs/)
	$(PY) -m jobs.pipeline --conf $(CONF)

# Test processes (pytest-xdist). Most of a test's time is a JVM or a Spark job starting, which leaves a
# core idle, so two processes on two cores finish sooner; each test file runs whole in one of them (the
# cluster tests share one standalone cluster). TEST_WORKERS=0 runs them in this process, one at a time.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: check-java $(STAMP) ## run the whole test suite
	$(PY) -m pytest -q $(XDIST) --durations=15

test-fast: check-java $(STAMP) ## the tests not marked slow (your inner loop)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

bench: check-java $(STAMP) ## run the benchmarks (prints ratios; results in bench/results/)
	$(PY) -m bench.bench_sessionize
	$(PY) -m bench.bench_daily
	$(PY) -m bench.bench_train
	$(PY) -m bench.bench_baseline
	$(PY) -m bench.bench_choice
	$(PY) -m bench.bench_ensemble
	$(PY) -m bench.bench_attribute
	$(PY) -m bench.profile_attribute
	$(PY) -m bench.bench_removal
	$(PY) -m bench.bench_report
	$(PY) -m bench.bench_faithfulness --spark
	$(PY) -m bench.bench_scenarios
	$(PY) -m bench.bench_connect

# The torch wheel that goes into the cluster archive: the CUDA build of your executors, e.g.
# make package TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
package: $(STAMP) ## build dist/: the code zip for --py-files and the venv-pack archive for --archives
	$(PY) scripts/package.py --out dist/session_attribution.zip
	rm -rf dist/pack-env && $(PYTHON) -m venv dist/pack-env
	dist/pack-env/bin/python -m pip install --quiet $(TORCH_SPEC)
	dist/pack-env/bin/python -m pip install --quiet -r requirements.lock venv-pack==0.2.0
	dist/pack-env/bin/python -m pip install --quiet --no-deps .
	dist/pack-env/bin/venv-pack -p dist/pack-env -o dist/session_attribution_env.tar.gz --force --quiet
	@echo "spark-submit --archives dist/session_attribution_env.tar.gz#environment --py-files dist/session_attribution.zip jobs/<stage>.py ..."

lint: $(STAMP) ## ruff, and mypy on the library, the UDFs and the jobs
	$(PY) -m ruff check attribution udfs jobs tests bench scripts
	$(PY) -m ruff format --check attribution udfs jobs tests bench scripts
	$(PY) -m mypy

clean: ## remove generated data, outputs and the virtualenv
	rm -rf $(VENV) data outputs dist bench/results spark-warehouse metastore_db derby.log .pytest_cache *.egg-info
