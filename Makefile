# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Pinned: constraints.txt holds every package's exact version (regenerate with `make lock`).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/textpulse up

# Browser tests drive Debian's chromium; install it when missing (never a downloaded browser).
# The suite runs in PYTEST_WORKERS processes (pytest-xdist), each with its own Temporal dev server
# and databases; most tests wait on a real service, so two processes on two cores halve the time.
PYTEST_WORKERS ?= 2
test: install
	@command -v chromium >/dev/null 2>&1 || command -v /usr/bin/chromium >/dev/null 2>&1 || \
		{ (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		  echo "warning: could not install chromium; browser tests will fail"; }
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# ruff (style and common bugs) and mypy (types) over everything we ship; both must be clean.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every bench/ script with a short profile (bench/run_all.py: about 7 minutes on 2 busy cores); rewrites
# the generated section of docs/benchmarks.md. Options pass through, e.g. BENCH_ARGS="--only redirect".
BENCH_ARGS ?=
bench: install
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lock: $(BIN)/python
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^textpulse' > constraints.txt

clean:
	rm -rf $(VENV) var
