# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck docs bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned: 2.13.0 has a CPU build; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/darklens demo --out runs/demo

# lint-imports: the import layers of pyproject.toml ([tool.importlinter]) hold.
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The public API and examples/quickstart.py under mypy --strict (pyproject.toml [tool.mypy]).
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml) into site/, offline; --strict: a broken link, anchor or
# API reference fails the build. Installs the docs extra into .venv first.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/simulate.py --threads 1 --out benchmarks/results/simulate-threads1.json

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache site
