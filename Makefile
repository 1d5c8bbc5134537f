# Every target runs in the project's own virtual environment, .venv: created and
# installed (with the development extras) when it is missing, used as it is when it
# already holds this checkout's convstore with what pyproject.toml asks for
# (tools/venv_ready.py checks in a fraction of a second; a .venv made by hand with
# `pip install -e '.[dev]'`, or '.[agents]' for the demo, passes too). `make clean`
# removes it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install demo test test-quick lint format bench clean

# $(call venv_with,EXTRA): install the development extras unless .venv is ready for EXTRA.
define venv_with
	@if [ -x $(PY) ] && $(PY) tools/venv_ready.py $(1); then :; else \
		echo "make: installing convstore and its development extras into $(VENV)"; \
		$(PYTHON) -m venv $(VENV) && \
		$(PY) -m pip install --quiet --upgrade pip && \
		$(PY) -m pip install --quiet -e '.[dev]' && \
		$(PY) tools/venv_ready.py; \
	fi
endef

install:
	$(call venv_with,dev)

# Needs the Agents SDK only: a .venv made with `pip install -e '.[agents]'` will do.
demo:
	$(call venv_with,agents)
	$(PY) examples/notes_agent.py

# Every backend it can reach: SQLite always; PostgreSQL and MariaDB on the databases
# CONVSTORE_TEST_POSTGRES_URL and CONVSTORE_TEST_MYSQL_URL name or, when those are not
# set, on postgresql://postgres@127.0.0.1:5432/test and mysql://root@127.0.0.1:3306/test
# if a server answers there (tests/conftest.py). The run ends with what ran and how to
# enable the rest. An empty variable leaves that backend out.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# A subset: the tests named in tests/quick.txt (every layer, the command, the FastAPI
# example, the README and a docs page) on every backend `make test` would reach.
# `pytest @tests/quick.txt` runs the same.
test-quick: install
	$(PY) -m pytest @tests/quick.txt $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The default set (about 10 minutes on 2 cores); each script alone takes --json, and
# more backends or sizes (see benchmarks/README.md and docs/performance.md).
bench: install
	$(PY) benchmarks/sessions_vs_sdk.py --backends sqlite-file,postgres
	$(PY) benchmarks/user_patterns.py --large
	$(PY) benchmarks/append_throughput.py --quick
	$(PY) benchmarks/read_cost.py --quick
	$(PY) benchmarks/storage.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
