# Two entry points from a fresh clone: `make demo` (the main job on the synthetic world) and `make test`.
# Both build .venv first; nothing but Python >= 3.11 is needed beforehand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/lidarssl demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/synthetic_fps.py
