# The two commands of the README: `make demo` and `make test`.
# Both create (or reuse) the virtual environment .venv by themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: setup demo test lint test-fast test-e2e format ui bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "collab_iu needs Python >= 3.11"'
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing collab_iu and its stack into $(VENV) (first time: about 4 minutes)..."
	$(VENV)/bin/python -m pip install -qq -c constraints.txt -e '.[dev]'
	@# `source .venv/bin/activate` then points `dagster dev` at the persistent instance, like the CLI
	@grep -q DAGSTER_HOME $(VENV)/bin/activate || echo 'export DAGSTER_HOME="$(CURDIR)/.dagster"' >> $(VENV)/bin/activate
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup  ## set up, then run the main job on the embedded synthetic dataset
	$(VENV)/bin/collab-iu run

test: lint test-fast test-e2e  ## set up, then lint, the fast tier, the end-to-end tier

lint: setup  ## formatting, lint rules, and the import contracts (the core imports no framework; no cycles)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: setup  ## rewrite the code as `make lint` wants it
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# pytest's exit code 5 ("no tests collected") is a failure
PYTEST = $(VENV)/bin/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup  ## every test but the end-to-end ones: tiny configs, CPU, one worker per core
	@$(call PYTEST,-m "not e2e" -n auto)

test-e2e: setup  ## dvc repro, dagster dev (UI, re-execution, pools) and the full `collab-iu run`, two modules at once
	@$(call PYTEST,-m e2e -n 2 --dist loadfile)

ui: setup  ## the Dagster UI on the persistent instance .dagster/ (http://127.0.0.1:3000)
	$(VENV)/bin/python -c 'from orchestration.defs.project import ensure_dagster_home; ensure_dagster_home()'
	DAGSTER_HOME="$(CURDIR)/.dagster" $(VENV)/bin/dagster dev

bench: setup  ## the data-pipeline benchmark (figures go to docs/benchmarks.md by hand)
	$(VENV)/bin/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache
