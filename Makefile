# The two commands a user needs are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,gpl,app,serve,track,tune,dist

.PHONY: install test e2e-deps nbtest pytest check-sync demo export readme docs clean distclean

## install: a virtual environment in .venv with kneeai editable; re-installs only when its inputs change
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "kneeai needs Python 3.10 or newer"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

## test: every test: the notebooks, pytest, and notebooks/modules in step
## test runs with its own KNEEAI_HOME (de-identification keys, cached measurements), unless one is set, so that it never
## writes into the user's ~/.kneeai, and with its own TMPDIR, removed afterwards, so that no test's scratch files outlive it
test: install
	@home=$$(mktemp -d); trap 'rm -rf "$$home"' EXIT; export KNEEAI_HOME="$${KNEEAI_HOME:-$$home}"; \
	mkdir "$$home/tmp"; export TMPDIR="$$home/tmp"; \
	$(MAKE) --no-print-directory e2e-deps nbtest pytest check-sync

## e2e-deps: Debian's chromium and chromedriver for the web app's end-to-end test (never a downloaded browser build)
e2e-deps:
	@if [ -n "$${KNEEAI_SKIP_E2E:-}" ] || { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "tests/test_app_e2e.py needs /usr/bin/chromium and /usr/bin/chromedriver: install Debian's chromium and chromium-driver (as root: make e2e-deps), or set KNEEAI_SKIP_E2E=1"; exit 1; fi

## nbtest: every notebook; cells marked `#| refdata` run only where the reference data (shared/data) is found, else they are listed as skipped
nbtest:
	@if $(BIN)/python -c 'import sys; from kneeai.core import reference_data; sys.exit(any(reference_data(d) is None for d in ("mrnet-samples", "knee-kl")))' 2>/dev/null; then \
	  flags=refdata; echo "reference data found: running the cells marked #| refdata"; \
	else flags=; echo "reference data (shared/data/mrnet-samples, knee-kl) not found: skipping the cells marked #| refdata in $$(grep -l '"#| refdata' nbs/*.ipynb nbs/tutorials/*.ipynb | xargs -n1 basename | tr '\n' ' ')"; fi; \
	$(BIN)/nbdev-test --n-workers 2 --timing --flags "$$flags"

## pytest: the pytest tests, then the 15 slowest
pytest:
	$(BIN)/python -m pytest tests/ -q --durations=15

## check-sync: fail if nbdev-export would change kneeai/ or nbdev-clean would change nbs/ (checked on a copy)
check-sync:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -r pyproject.toml nbs kneeai "$$tmp"/; \
	(cd "$$tmp" && $(BIN)/nbdev-export && $(BIN)/nbdev-clean) >/dev/null; \
	if ! diff -r -q -x __pycache__ kneeai "$$tmp/kneeai"; then \
	  echo "kneeai/ is not what nbdev-export makes from nbs/: edit the notebook, not the module, then run 'make export'"; exit 1; fi; \
	if ! diff -r -q -x .ipynb_checkpoints -x __pycache__ nbs "$$tmp/nbs"; then \
	  echo "these notebooks are not clean: run 'make export' (nbdev-export and nbdev-clean) and commit them"; exit 1; fi; \
	echo "check-sync: notebooks are clean and kneeai/ is exported from them"

## demo: install, then run the main job on built-in synthetic data
demo: install
	$(BIN)/kneeai demo

## export: generate kneeai/ from the notebooks and clean the notebooks
export:
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

## readme: README.md from nbs/index.ipynb (nbdev-readme with Quarto, else pandoc)
readme:
	if command -v quarto >/dev/null; then $(BIN)/nbdev-readme; else $(BIN)/python tools/readme.py nbs/index.ipynb README.md; fi

## docs: the documentation site in docs/ (needs Quarto)
docs: install
	@command -v quarto >/dev/null || { echo "make docs needs Quarto (https://quarto.org); it is not installed"; exit 1; }
	$(BIN)/nbdev-docs

clean:
	rm -rf _proc docs build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
