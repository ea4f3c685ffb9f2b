# Two commands for a fresh clone (see README): `make run` and `make test`.
# Everything installs into .venv inside the clone; nothing installed by hand is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.example.yaml

.PHONY: install run test soak check lint typecheck bench clean

$(STAMP): pyproject.toml plugins/funnelkvs-prometheus/pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("FunnelKVS needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e plugins/funnelkvs-prometheus
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/funnelkvs node --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q -m 'not soak'

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
