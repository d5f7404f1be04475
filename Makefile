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

# The fused SE merge's operator alone (`senet::se_merge` and its backward, PyTorch operations on the CPU):
# gradcheck, torch.library.opcheck and float64 equivalence with the formula, the op's contract.
test-kernels: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n $(JOBS) tests/test_fused_se.py -k "gradcheck or opcheck or spatial_sums or batch_norm_affine or folded"

# A second `make demo` prints the first one's table; `make demo DEMO_ARGS=--overwrite` trains again.
demo: $(VENV)/.demo
	$(BIN)/senet demo $(DEMO_ARGS)

readme: $(VENV)/.dev
	$(BIN)/python scripts/update_readme.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
