SHELL := /bin/bash
# The README's two commands: `make quickstart` and `make test`. Both build .venv from the requirement files
# when it is missing or older than them, so they work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAUNCH_STAMP := $(VENV)/.installed-launch
# Some pip mirrors print one "is ignored" warning per package: filtered out, real errors stay visible.

.PHONY: quickstart test test-all bench bench-quick evidence clean-venv

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c "import sys; assert sys.version_info[:2] == (3, 11)" 2>/dev/null || { echo "Python 3.11 is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# mujoco 4.0.0 (an earlier pin) split into mujoco-core / mujoco-studio, which own mujoco/'s files: remove them
	@# before requirements.txt puts mujoco 3.3.7 there (a no-op on a fresh venv).
	@$(PY) -m pip uninstall -y -q mujoco-core mujoco-studio 2>/dev/null || true
	set -o pipefail; $(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	set -o pipefail; $(PY) -m pip install -q --no-deps -r requirements-nodeps.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	set -o pipefail; $(PY) -m pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

# The launchers' extra set (xmanager) lives in its own file; the test command installs it too.
$(LAUNCH_STAMP): $(STAMP) requirements-launch.txt
	set -o pipefail; $(PY) -m pip install -q -r requirements-launch.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

quickstart: $(STAMP)
	$(PY) -m batch_rl_dr3.quickstart

test: $(STAMP) $(LAUNCH_STAMP)
	$(PY) -m pytest -n 2 -q

test-all: $(STAMP) $(LAUNCH_STAMP)
	$(PY) -m pytest -n 2 -q -m ""

# The README's Replication section: the DR3 paper's qualitative claims in small (~30 min on one CPU core).
evidence: $(STAMP) $(LAUNCH_STAMP)
	$(PY) -m launch.small_evidence --out=evidence_out --max_parallel=1

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

clean-venv:
	rm -rf $(VENV)
