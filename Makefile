# gud-book: `make book` builds the book, `make test` runs the tests (both create .venv first).
# GUD_PROFILE (ci | gpu | paper) is passed through to notebooks: `make book GUD_PROFILE=gpu`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help env test test-unit results test-notebooks test-html book bench clean

VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY := $(BIN)/python
GUD_PROFILE ?= ci
export GUD_PROFILE
export PATH := $(BIN):$(PATH)
# torch goes in first: the CPU build where its wheel lies on this machine's disk
# (pip's find-links), the default build elsewhere. Override with `make env TORCH=...`.
TORCH ?= $(if $(wildcard /opt/wheels/torch-2.13.0*),torch==2.13.0,torch)
STAMP := $(VENV)/.gud-installed
NOTEBOOKS := $(wildcard book/*.ipynb)

help:
	@echo "make env        create $(VENV) and install gud with the book and test extras"
	@echo "make test       unit tests, the ci results recomputed and verified against the committed ones, the notebooks under nbval"
	@echo "make results    compute every missing result of GUD_PROFILE=$(GUD_PROFILE) (python -m gud run --pending)"
	@echo "make book       build the Jupyter Book into _build/html (GUD_PROFILE=$(GUD_PROFILE))"
	@echo "make test-html  render the built book in headless Chromium (needs chromium)"
	@echo "make bench      run benchmarks/bench_*.py"
	@echo "make clean      remove _build and training checkpoints (runs/)"

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[book,test]"
	@touch $@

test: test-unit results test-notebooks

# Two workers (one torch thread each, tests/conftest.py): 2 min instead of 4-5 on two cores.
test-unit: env
	$(PY) -m pytest -q -n 2 tests --ignore=tests/html

# The committed ci results (results/*/ci/) are the book's reference. `make results` recomputes them
# from scratch into $(VERIFY_DIR) (two worker processes, one torch thread each) and verifies them
# against the reference: every metric within its own error, every verdict unchanged
# (python -m gud verify). gpu and paper results are read from the committed store.
VERIFY_DIR ?= _build/verify
results: env
ifeq ($(GUD_PROFILE),ci)
	rm -rf $(VERIFY_DIR)/results
	GUD_RESULTS=$(abspath $(VERIFY_DIR))/results GUD_RUNS=$(abspath $(VERIFY_DIR))/runs \
		$(PY) -m gud run --all --profile ci --jobs 2 --quiet
	$(PY) -m gud verify --profile ci --against $(VERIFY_DIR)/results
else
	$(PY) -m gud status --profile $(GUD_PROFILE)
endif

# Every notebook re-executed (two workers, one notebook each); cells whose outputs are computed
# numbers are tagged nbval-ignore-output (CI recomputes them), the others are compared.
test-notebooks: env
ifneq ($(NOTEBOOKS),)
	$(PY) -m pytest -q -n 2 --dist loadscope --nbval --nbval-sanitize-with book/sanitize.cfg $(NOTEBOOKS) \
		|| { rc=$$?; [ $$rc -eq 5 ] && echo "nbval: no code cells to check"; [ $$rc -eq 5 ]; }
endif

test-html: env
	$(PY) -m pytest -q tests/html

# The execution cache does not know GUD_PROFILE, nor the package the notebooks call: a build for
# another profile starts afresh, and a change of gud/ (or of the stored results) re-executes every
# notebook (the cache would otherwise show outputs of the earlier code).
# The book renders the committed results (no training); a ci result missing from the store (a
# changed configuration) is computed first. The ci results are also the fallback a gpu book shows
# for a chapter whose gpu result is not committed yet.
book: env
	$(PY) -m gud run --pending --profile ci --jobs 2 --quiet
	@if [ -f _build/.gud-profile ] && [ "$$(cat _build/.gud-profile)" != "$(GUD_PROFILE)" ]; then \
		echo "GUD_PROFILE changed to $(GUD_PROFILE): removing _build"; rm -rf _build; fi
	@mkdir -p _build && echo "$(GUD_PROFILE)" > _build/.gud-profile
	@stamp="$$(cat gud/*.py gud/experiments/*.py $$(find results -name metrics.json | sort) | sha256sum | cut -c1-16)"; \
	if [ -f _build/.gud-inputs ] && [ "$$(cat _build/.gud-inputs)" != "$$stamp" ]; then \
		echo "gud/ or results/ changed since the last build: every notebook is executed again"; \
		rm -rf _build/.jupyter_cache _build/jupyter_execute _build/.doctrees; fi; \
	echo "$$stamp" > _build/.gud-inputs
	$(BIN)/jupyter-book build . -W -n --keep-going

bench: env
	@shopt -s nullglob; files=(benchmarks/bench_*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks yet"; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f" || exit 1; done

clean:
	rm -rf _build runs
