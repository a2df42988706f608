# The project's two entry points: `make bench` (full default benchmark) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emsrbench-installed
CORES ?= 2
SNAKEMAKE_ARGS ?=
# GPUS=N: a machine with N GPUs and no SLURM: at most N GPU jobs at once, each on its own
# card (emsrbench.gpu_pool); jobs without a GPU rule run on the CPU.
GPUS ?=
ifneq ($(strip $(GPUS)),)
export EMSR_GPUS := $(GPUS)
SNAKEMAKE_ARGS += --resources gpu=$(GPUS)
endif

.PHONY: bench test style paper-smoke install dry-run lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the pinned local wheels; basicsr builds against it (no build isolation).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-build-isolation basicsr==1.4.2
	touch $(STAMP)

install: $(STAMP)

# --keep-going: a failing method must not stop the others; if any job fails, the report is
# still built from the rows that exist (`snakemake report`), with the failed rows marked.
bench: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --keep-going $(SNAKEMAKE_ARGS) || { \
	  $(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS) report; \
	  echo "some jobs failed (records in results/failed/); report: $$(pwd)/results/report/index.html"; exit 1; }
	@echo "leaderboard: $$(pwd)/results/leaderboard.md (and leaderboard.csv)"
	@echo "report: $$(pwd)/results/report/index.html"

# The formatter and linter first (pyproject.toml [tool.ruff]): a line of style fails in seconds.
test: $(STAMP) style
	$(PY) -m pytest -ra $(PYTEST_ARGS)

style: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# Paper-scale smoke (issue 14): every paper preset takes one training step at the study's
# patch and batch and infers one 1024x1024 section, on the CPU (tests/test_paper_scale.py),
# and benchmarks/gpu.py's smoke mode runs every model. Too long for CI (docs/running.md).
# One process per group of tests: freed memory a long process keeps counts in the next
# test's peak (after 15 tests GPEMSR stage III passed 10 GiB; 7.7 GiB in its own process).
PAPER_SMOKE_GROUPS := method_paper_preset "stage1 or stage2" "stage3 or segmenter"
paper-smoke: $(STAMP)
	@status=0; for group in $(PAPER_SMOKE_GROUPS); do \
	  EMSR_PAPER_SCALE=1 $(PY) -m pytest -ra -m paper_scale tests/test_paper_scale.py -k "$$group" $(PYTEST_ARGS) || status=1; \
	done; \
	EMSR_PAPER_SCALE=1 $(PY) -m pytest -ra -m paper_scale tests/test_gpu_benchmark.py $(PYTEST_ARGS) || status=1; \
	exit $$status

dry-run: $(STAMP)
	$(VENV)/bin/snakemake -n --cores $(CORES)

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
