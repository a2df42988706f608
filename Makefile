# The project's two entry points: `make bench` (full default benchmark) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emsrbench-installed
CORES ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: bench test install dry-run lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the pinned local wheels; basicsr builds against it (no build isolation).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-build-isolation basicsr==1.4.2
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	@echo "leaderboard: $$(pwd)/results/leaderboard.md (and leaderboard.csv)"

test: $(STAMP)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

dry-run: $(STAMP)
	$(VENV)/bin/snakemake -n --cores $(CORES)

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
