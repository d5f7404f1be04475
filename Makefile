# The README's two commands. Each makes .venv when it is missing and installs senet under the pins in
# constraints.txt (torch==2.13.0 CPU), so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt
# pytest-xdist workers; each worker gets one torch thread (tests/conftest.py).
JOBS   ?= 2

.PHONY: test test-slow test-kernels demo readme clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@

$(VENV)/.demo: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[demo]'
	touch $@

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow and not gpu"

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup -m "slow or gpu"

# The Triton kernels of the SE merge on the CPU, under Triton's interpreter (installs Triton, ~200 MB).
test-kernels: $(VENV)/.dev
	$(PIP) triton
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -n $(JOBS) -m triton tests/test_triton_se.py

demo: $(VENV)/.demo
	$(BIN)/senet demo

readme: $(VENV)/.dev
	$(BIN)/python scripts/update_readme.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
