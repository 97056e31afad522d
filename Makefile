# llmchat: `make run` to try it, `make test` to test it. See README.md.

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

# The Python named in .python-version (through pyenv, or on PATH as python3.13),
# else python3 when it is at least 3.12.
PY_VERSION := $(shell cat .python-version)
PYTHON ?= $(shell for p in python$(PY_VERSION) python3; do \
	command -v $$p >/dev/null 2>&1 && \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && \
	{ command -v $$p; break; }; done)

.PHONY: install run superuser test lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@if [ ! -x $(BIN)/python ]; then \
		if [ -z "$(PYTHON)" ]; then \
			echo "error: llmchat needs Python $(PY_VERSION) (or at least 3.12); none was found." >&2; \
			echo "Install it (e.g. 'pyenv install $(PY_VERSION)') or run: make PYTHON=/path/to/python3.13 ..." >&2; \
			exit 1; \
		fi; \
		echo "Creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# Development server: the production ASGI path (uvicorn), with autoreload.
run: export DEBUG ?= true
run: install
	$(BIN)/python manage.py migrate --noinput
	@echo "llmchat is at http://$(HOST):$(PORT)/  (Ctrl-C stops it)"
	$(BIN)/uvicorn llmchat.asgi:application --host $(HOST) --port $(PORT) \
		--reload --reload-include '*.html' --reload-include '*.css' --reload-include '*.js' \
		--no-access-log

superuser: export DEBUG ?= true
superuser: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createsuperuser

# The whole suite: SQLite by default, PostgreSQL when DATABASE_URL is set.
test: install
	$(BIN)/python -m pytest $(ARGS)

lint: export DEBUG ?= true
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Both benchmarks (PostgreSQL on 127.0.0.1:5432); they print numbers, never fail on
# timing. See docs/performance.md.
bench: export DEBUG ?= true
bench: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/llmchat_bench
bench: install
	$(BIN)/python bench/chat_load.py
	$(BIN)/python bench/chat_load.py --users 200 --reply-tokens 400 --duration 30
	$(BIN)/python bench/reports.py --rows 1000000
	$(BIN)/python bench/reports.py --cleanup

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
