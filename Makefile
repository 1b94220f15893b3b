# Two entry points from a fresh clone: `make demo` (the main job on the synthetic world) and `make test`.
# Both build .venv first; nothing but Python >= 3.11 is needed beforehand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,viz]'
	@# On a CUDA machine swap spconv's CPU build for its CUDA build (same module and API).
	if nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip uninstall --quiet -y spconv && $(BIN)/python -m pip install --quiet spconv-cu126==2.3.8; fi
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/lidarssl demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	for script in benchmarks/*.py; do OMP_WAIT_POLICY=PASSIVE $(BIN)/python $$script || exit 1; done
