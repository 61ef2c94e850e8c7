# Two commands do all the set-up on a fresh machine:
#   make up    deploy the dev stack to local Docker with `pulumi up` (local file state backend)
#   make test  install what the tests need and run the whole suite
# Also: make demo (run the dev stack's workloads as local processes), make render, make lint.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev
STAMP  := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: up test demo render lint preflight system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

preflight:
	@scripts/preflight.sh

# Local file backend and a passphrase file kept beside it: no cloud account needed.
up: preflight $(STAMP)
	@mkdir -p .pulumi-state
	@test -s .pulumi-state/passphrase || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > .pulumi-state/passphrase
	PATH="$(CURDIR)/$(BIN):$$PATH" PULUMI_BACKEND_URL="file://$(CURDIR)/.pulumi-state" \
	PULUMI_CONFIG_PASSPHRASE_FILE="$(CURDIR)/.pulumi-state/passphrase" \
	sh -c 'pulumi stack select --create $(STACK) && pulumi up --stack $(STACK) $(if $(YES),--yes,)'

system-deps:
	@scripts/system-deps.sh

test: system-deps $(STAMP)
	$(BIN)/ruff check sdk tests stacks examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile

demo: $(STAMP)
	$(BIN)/mlops demo --stack $(STACK)

render: $(STAMP)
	$(BIN)/mlops render --stack $(STACK) --out-dir out/$(STACK)

lint: $(STAMP)
	$(BIN)/ruff check sdk tests stacks examples
	$(BIN)/mypy

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
