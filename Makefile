# `make run` and `make test` create or refresh the virtualenv themselves (with the test and
# bench extras: the suite smoke-tests the benchmark's baselines too; and the pfcf extra: the
# suite tests the PFCF feed and venue with unitrade's own objects).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test venv bench bench-quick chaos soak install uninstall clean

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

# The daemon as a systemd service (README, "systemd"; systemd/install.sh does the work).
# As root: `make install` lays out $(PREFIX)/.venv, $(SYSCONFDIR)/$(INSTANCE).toml if absent,
# the user hftd and $(UNITDIR)/hftd@.service; `make install INSTANCE=paper` adds a config.
# DESTDIR=/some/root stages it all there and touches nothing else (tests, packaging).
# SERVICE_PYTHON: the service's interpreter, system-wide (user hftd must read it; the unit
# hides /home and /root). EXTRAS: hftd's extras for the service's venv, e.g. pfcf.
SERVICE_PYTHON ?= /usr/bin/python3
PREFIX     ?= /opt/hftd
SYSCONFDIR ?= /etc/hftd
UNITDIR    ?= /etc/systemd/system
BINDIR     ?= /usr/local/bin
INSTANCE   ?= default
EXTRAS     ?=
DESTDIR    ?=
INSTALL_ENV = SERVICE_PYTHON='$(SERVICE_PYTHON)' PREFIX='$(PREFIX)' SYSCONFDIR='$(SYSCONFDIR)' \
	UNITDIR='$(UNITDIR)' BINDIR='$(BINDIR)' INSTANCE='$(INSTANCE)' EXTRAS='$(EXTRAS)' \
	DESTDIR='$(DESTDIR)'

install:
	$(INSTALL_ENV) systemd/install.sh install

uninstall:             # keeps configs, state and the user (and prints how to remove them)
	$(INSTALL_ENV) systemd/install.sh uninstall

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
