# Set-up on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Both bootstrap .venv first; every target is idempotent and quick once .venv is current.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# GPU users pick their own build: make install TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export OMP_NUM_THREADS ?= 1
# DeepSpeed's JIT-built CPU comm op, cached per venv (see tests/conftest.py).
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
PYTEST_ARGS ?=

.PHONY: install demo test test-fast test-slow clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, and only when absent: an already-installed build (CUDA or CPU) is respected.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	# Pin whatever torch is now installed, so no dependency can pull a multi-GB CUDA build.
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(PIP) install -c $(VENV)/torch-constraint.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/mmdit-scale demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
