# capgap: two commands on a fresh machine.
#   make test   install what the tests need into .venv, then lint and run the test suite
#   make demo   install, then run the main job: a quick scaling sweep, its evaluation and report
#   make bench  install the peers (Minigrid, Stable-Baselines3), then run the speed benchmarks
# Both create .venv on first use. TORCH pins the torch build installed before the project
# (the CPU 2.13.0 build lies on disk here; elsewhere pick yours, e.g. TORCH=torch==2.5.1).

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.capgap-installed

.PHONY: test demo bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadgroup --durations=10

# The main job: a quick scaling sweep on the default env (4 rungs x 3 seeds, micro to base, a 7x7
# maze and 400k steps, so that three of the four rungs learn it in minutes), every checkpoint
# evaluated on both splits, and the report.
DEMO ?= sweeps/quick
demo: $(STAMP)
	$(BIN)/capgap sweep --rungs 1..4 --seeds 0..2 --out $(DEMO) --total-steps 400000 --eval-every 100000 \
		--eval-episodes 256 --dials size=7 max_steps=40
	$(BIN)/capgap eval $(DEMO) --episodes 256
	$(BIN)/capgap report $(DEMO)

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/train_speed.py
