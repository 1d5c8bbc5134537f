# Every target creates (or reuses) the project's own virtual environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/notes_agent.py

# PostgreSQL and MariaDB suites run when CONVSTORE_TEST_POSTGRES_URL and
# CONVSTORE_TEST_MYSQL_URL are set (make test-all sets both to the local servers).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	CONVSTORE_TEST_POSTGRES_URL=$${CONVSTORE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test} \
	CONVSTORE_TEST_MYSQL_URL=$${CONVSTORE_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test} \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The default set (about 10 minutes on 2 cores); each script alone takes --json, and
# more backends or sizes (see benchmarks/README.md and docs/performance.md).
bench: $(STAMP)
	$(PY) benchmarks/sessions_vs_sdk.py --backends sqlite-file,postgres
	$(PY) benchmarks/append_throughput.py --quick
	$(PY) benchmarks/read_cost.py --quick
	$(PY) benchmarks/storage.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
