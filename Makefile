# make run: set up .venv with what training needs and train the sine LSTM.
# make test: add the parity and images extras (TensorFlow, scikit-learn) and the test tools, then lint
# and run the tests (the reproducibility tests on this CPU's kernels and on the AVX2 ones: another CPU's float32 bits).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TRAIN := $(VENV)/.installed-train
ALL := $(VENV)/.installed-all

.PHONY: setup run test results clean

setup: $(ALL)

# torch first and pinned: the CPU wheel; nothing later may pull a CUDA build.
$(TRAIN): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e .
	$(PY) -m lstm_pl.fused || true  # the hand-written cells' compiled kernels; they run eagerly without
	touch $(TRAIN)

# tf_keras without its dependencies: it names the full tensorflow wheel, tensorflow-cpu provides it.
$(ALL): $(TRAIN)
	$(PIP) -c constraints.txt -e ".[parity,test,images]"
	$(PIP) -c constraints.txt --no-deps tf_keras
	touch $(ALL)

# One intra-op thread unless you set OMP_NUM_THREADS: these models are small, one thread is the
# fastest for them, and on a busy machine two threads spin against the load (sine: 70 s against 7 s).
run: $(TRAIN)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m lstm_pl fit --config configs/sine.yaml

# Two workers: the suite is CPU-bound and this machine has two cores (pytest-xdist); loadgroup keeps
# a file that shares one expensive fixture (tests/test_reproducible.py) on one worker.
test: $(ALL)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadgroup

# Every experiment over seeds: docs/figures/ and RESULTS.md's tables (about an hour on two cores).
results: $(ALL)
	$(PY) -m lstm_pl.results

clean:
	rm -rf $(VENV) runs
