# Two entry points: `make demo` and `make test`. Both create/reuse .venv themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pyworld 0.3.5 ships only an sdist whose setup.py imports pkg_resources, removed in
# setuptools 82: build it without isolation against a pinned setuptools.
BUILD_PINS := "setuptools>=64,<81" wheel "cython>=3" "numpy>=1.26"
# The CPU build of torch (a plain `torch` pulls a multi-GB CUDA build on a GPU-less box).
TORCH := torch==2.13.0

.PHONY: venv demo test check lint format clean bench browser

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip<26.2"
	$(PY) -m pip install --quiet $(BUILD_PINS)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet --no-build-isolation pyworld==0.3.5
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev]"
	$(PY) -c "import pyworld, torch, zarr, dask.distributed, transformers; print('venv ready: torch', torch.__version__, 'zarr', zarr.__version__)"
	touch $(STAMP)

# The README quick start: the synthetic corpus (preset premise: the speaker in the cues p_s
# randomises, the emotion in those it keeps), 5 views of each kind (2 used in training to
# stay within minutes on 2 CPU cores), 3 epochs of the tiny
# backbone (its learning rate is far above the paper's 1e-5, which is meant for pretrained
# weights), then the test metrics. Every step is resumable: re-running skips what is done.
DEMO_TRAIN := --backbone tiny --views 2 --epochs 3 --seeds 42 --lr 1e-3 --max-seconds 1.5 --out runs/demo --resume

demo: $(STAMP)
	$(VENV)/bin/ncore-prep manifest --dataset synthetic --preset premise
	$(VENV)/bin/ncore-prep perturb --dataset synthetic --views 5
	$(VENV)/bin/ncore-train --manifest manifests/synthetic.json $(DEMO_TRAIN)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline trainer tests bench studies
	$(VENV)/bin/ruff format --check pipeline trainer tests bench studies

format: $(STAMP)
	$(VENV)/bin/ruff format pipeline trainer tests bench studies
	$(VENV)/bin/ruff check --fix pipeline trainer tests bench studies

# Headless Chromium for tests/test_listen_browser.py (the listening page in a real browser):
# Debian's package, installed with apt-get when missing and we are root (or have sudo).
# Where that is impossible this says so and the test is skipped with the reason;
# NCORE_REQUIRE_BROWSER=1 (set by .ci/run) turns that skip into a failure.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "browser: $$(command -v chromium)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no chromium and no apt-get here: the browser test will be skipped"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "browser: installing chromium needs root: the browser test will be skipped"; exit 0; fi; \
	  echo "browser: installing Debian's chromium with apt-get"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "browser: apt-get could not install chromium: the browser test will be skipped"; \
	fi

test: $(STAMP) lint browser
	$(VENV)/bin/python -m pytest -q -rs

# The fast check while editing: ruff and every test not marked slow (no browser install).
# The fast check: ruff and the tests not marked slow, on both cores (pytest-xdist).
check: $(STAMP) lint
	$(VENV)/bin/python -m pytest -q -m "not slow" -x -n 2

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
