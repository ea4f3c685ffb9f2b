# Two commands for a fresh clone (see README): `make run` and `make test`.
# Everything installs into .venv inside the clone; nothing installed by hand is assumed.
# The interpreter behind .venv: the first Python 3.11+ (with venv and ensurepip) in this list.
# /usr/bin/python3 comes first on purpose: distribution builds are compiled with PGO and LTO, and on
# this project's machine Debian's 3.11 ran the node 8-25 % faster than a plain source build of 3.11
# (docs/performance.md). Override with `make PYTHON=/path/to/python3.x ...`.
ifndef PYTHON
PYTHON := $(shell for p in /usr/bin/python3 python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
endif
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.example.yaml

.PHONY: install run test soak check lint typecheck bench clean

$(STAMP): pyproject.toml plugins/funnelkvs-prometheus/pyproject.toml
	@test -n "$(PYTHON)" || { echo "FunnelKVS needs Python 3.11+ with the venv module" >&2; exit 2; }
	$(PYTHON) -c 'import sys; sys.exit("FunnelKVS needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e plugins/funnelkvs-prometheus
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/funnelkvs node --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

soak: $(STAMP)
	$(PY) -m pytest -q -m soak -o timeout=3600

lint: $(STAMP)
	$(VENV)/bin/ruff check funnelkvs plugins tests
	$(VENV)/bin/ruff format --check funnelkvs plugins tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy funnelkvs plugins/funnelkvs-prometheus/funnelkvs_prometheus

check: lint typecheck

bench: $(STAMP)
	../shared/bench/compare.sh 127.0.0.1:8001

clean:
	rm -rf $(VENV) build *.egg-info
