# The two commands a newcomer needs: `make demo` and `make test`. Everything installs itself into
# .venv (project) and .venv-sam (SAM CLI, which pins its own boto3) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
export AWS_DEFAULT_REGION ?= ap-southeast-2
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE := 1
# The shared layer is importable the way Lambda makes it (/opt/python), with no sys.path edits.
export PYTHONPATH := $(CURDIR)/layers/shared:$(CURDIR)

.PHONY: help install requirements lint typecheck validate pytest coverage test demo serve bench docs clean

help:
	@echo "make demo   - run the hourly sync end to end on the local stack (moto + XPM simulator)"
	@echo "make test   - ruff, mypy, sam validate --lint and the whole pytest suite"
	@echo "make serve  - the local stack plus the REST API on http://127.0.0.1:3000"
	@echo "make bench  - the performance benchmark (writes bench/results.json)"
	@echo "make coverage - the pytest suite with branch coverage"
	@echo "make lint / typecheck / validate / pytest - one part of make test"
	@echo "make docs   - regenerate docs/openapi.json and docs/entry-codes.md"
	@echo "make requirements - regenerate the layer's requirements.txt from pyproject.toml"
	@echo "make clean  - remove the virtualenvs, caches and build output"

$(VENV)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	touch $@

$(SAM_VENV)/.installed: requirements/sam.lock
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements/sam.lock
	touch $@

# The two environments install side by side: pip spends most of its time unpacking and compiling
# on one core, so a fresh clone's `make test` waits for the slower of the two instead of both.
# That sub-make is the only place anything runs in parallel: every other target runs in order even
# under -j, so two recipes never install into one environment at once.
ifndef XPM_SYNC_INSTALLING
.NOTPARALLEL:
endif

install:
	@$(MAKE) -s --no-print-directory -j2 XPM_SYNC_INSTALLING=1 $(VENV)/.installed $(SAM_VENV)/.installed

# The layer's requirements.txt is generated from pyproject.toml (one source of dependencies).
requirements: $(VENV)/.installed
	$(PY) scripts/requirements.py --write

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy layers/shared/xpm_sync functions local tests bench scripts

validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --template template.yaml

# Four workers on any machine: many tests wait on sockets, sleeps and a second process (moto
# server, the XPM simulator), so four keep two cores busy where two left them idle a third of the
# time. Coverage is its own target: tracing every line made the suite half as slow again.
pytest: $(VENV)/.installed
	$(VENV)/bin/pytest -n 4

coverage: $(VENV)/.installed
	$(VENV)/bin/pytest -n 4 --cov --cov-report=term

test: install lint typecheck validate pytest

demo: $(VENV)/.installed
	$(PY) -m local.demo

serve: $(VENV)/.installed
	$(PY) -m local.serve

bench: $(VENV)/.installed
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage .aws-sam build

# Generated documents (tests fail when they are stale): the API's OpenAPI and the entry codes.
docs: $(VENV)/.installed
	$(PY) -m scripts.openapi --write
	$(PY) -m scripts.entry_catalogue --write
