# One command to set up and run the main job, one to set up and run the tests.
# Both create ./.venv on first use. torch is installed first and pinned so pip takes the CPU
# wheel available on the project's machines instead of pulling a multi-GB CUDA build.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast docs lint typecheck format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q "$(TORCH)" -e ".[test,plot]"
	touch $@

demo: setup
	$(PY) -m conjure_metrics.demo

# Two pytest workers, one per core of the project's machines; a file's tests stay on one worker so its
# module-scoped fixtures (trained adapters, saved tiny models) are built once. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST)

# For the edit-test loop: everything but the tests marked slow (statistical checks, the LoRA demo,
# benchmark smoke runs, multi-process training). CI runs the whole suite (`make test`).
test-fast: setup
	$(PYTEST) -m "not slow"

# The documentation site, built strictly (any warning fails), into ./site.
docs: setup
	$(PY) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

# Style and static checks as CI runs them: ruff (lint + formatting) and mypy; `make format` rewrites in place.
lint: setup
	$(PY) -m pip install -q -e ".[lint]"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(PY) -m pip install -q -e ".[lint]"
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: setup
	$(PY) -m pip install -q -e ".[lint]"
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
