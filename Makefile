# `make run` and `make test` create or refresh the virtualenv themselves (with the test and
# bench extras: the suite smoke-tests the benchmark's baselines too; and the pfcf extra: the
# suite tests the PFCF feed and venue with unitrade's own objects).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test venv bench bench-quick chaos soak install-systemd clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench,pfcf]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/hftd run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)        # the full suite, <= 15 minutes; results in bench/results/
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)  # a short version, <= 2 minutes
	$(BIN)/python -m bench.run --quick

chaos: $(STAMP)        # 200 SIGKILLs over every agent of a trading run, then its invariants (~5 minutes)
	$(BIN)/python -m bench.chaos --kills 200 --rate 50000 --seed 1 --out bench/results/chaos.json $(CHAOS_ARGS)

soak: $(STAMP)         # 10 minutes at 100k ticks/s: memory of every process and p99 per minute (~11 minutes)
	$(BIN)/python -m bench.soak --minutes 10 --rate 100000 $(SOAK_ARGS)

install-systemd:
	install -m 0644 systemd/hftd@.service /etc/systemd/system/hftd@.service
	systemctl daemon-reload

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
