# hf-ext: every target sets itself up. `make demo` and `make test` each work alone on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYDOCS := /usr/share/doc/python3.11/html/_sources
# torch first and pinned: a CPU wheel lies on this machine's disk, while an unpinned torch pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench lint pydocs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,gguf]"
	touch $(STAMP)

# The demo and benchmarks read English text from Debian's python3.11-doc; install it when apt-get is there.
pydocs:
	@test -d $(PYDOCS) || { command -v apt-get >/dev/null && \
	  { apt-get install -y -q python3.11-doc >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q python3.11-doc >/dev/null; }; } ; } || \
	  echo "python3.11-doc is missing and could not be installed: pass --data with a local folder instead"

demo: $(STAMP) pydocs
	$(VENV)/bin/hf-ext demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: $(STAMP) pydocs
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)
	for b in benchmarks/*.py; do case $$b in *gpu_*|*llmc_baseline*|*_report*|*collect_results*) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done
	$(PY) benchmarks/collect_results.py

lint: $(STAMP)
	$(VENV)/bin/ruff check hf_ext tests benchmarks

clean:
	rm -rf $(VENV) .venv-* build *.egg-info
