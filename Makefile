# Two commands for a fresh machine:
#   make run   - set up, build the demo (synthetic test set, models, validations, signed reports)
#                and start the app on http://localhost:8501
#   make test  - set up and run the whole test suite (lint, types, tests)
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
WB      := $(VENV)/bin/workbench
WORKDIR ?= var/demo
PORT    ?= 8501

.PHONY: run test setup system-deps lint test-only demo app clean

run: setup
	$(WB) demo --workdir $(WORKDIR)
	$(WB) app --workdir $(WORKDIR) --port $(PORT)

demo: setup
	$(WB) demo --workdir $(WORKDIR)

app: setup
	$(WB) app --workdir $(WORKDIR) --port $(PORT)

test: setup system-deps
	bash scripts/test.sh

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	touch $@

system-deps:
	bash scripts/install_system_deps.sh

lint: setup
	$(VENV)/bin/ruff check workbench tests benchmarks
	$(VENV)/bin/ruff format --check workbench tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var
