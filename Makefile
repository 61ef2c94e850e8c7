# Two commands do all the set-up on a fresh machine:
#   make up    deploy the dev stack to local Docker with `pulumi up` (local file state backend)
#   make test  install what the tests need and run the whole suite
# Also: make down (destroy the stack `make up` deployed, same backend), make demo (run the dev
# stack's workloads as local processes), make render, make lint, make dist (build a wheel),
# make lock-runtime (re-pin requirements/runtime.txt, the runtime image's requirements, to .venv),
# make docs (regenerate the docs pages' input tables from the args models).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STACK  ?= dev
STAMP  := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: up down test demo render lint dist lock-runtime docs preflight system-deps clean

$(BIN)/python:
	@echo "==> creating $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Constrained by the runtime image's pins, so the tests run the versions the image installs.
$(STAMP): pyproject.toml requirements/runtime.txt | $(BIN)/python
	@echo "==> installing pulumi-mlops and its dependencies into $(VENV) (a few minutes the first time) ..."
	$(BIN)/python -m pip install --quiet -c requirements/runtime.txt -e '.[dev]'
	touch $(STAMP)

preflight:
	@STACK=$(STACK) scripts/preflight.sh

# `up` refreshes first: a container removed or stopped by hand (docker rm, docker stop) is then
# created or started again instead of being trusted from the state.
# Local file backend and a passphrase file kept beside it: no cloud account needed. `up`, `down`
# and the commands `up` prints at the end all use these two variables.
STATE        := $(CURDIR)/.pulumi-state
PULUMI_VARS  := PULUMI_BACKEND_URL="file://$(STATE)" PULUMI_CONFIG_PASSPHRASE_FILE="$(STATE)/passphrase"
PULUMI_ENV   := PATH="$(CURDIR)/$(BIN):$$PATH" $(PULUMI_VARS)

up: preflight $(STAMP)
	@mkdir -p $(STATE)
	@test -s $(STATE)/passphrase || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $(STATE)/passphrase
	$(PULUMI_ENV) sh -c 'pulumi stack select --create $(STACK) && pulumi up --refresh --stack $(STACK) $(if $(YES),--yes,)'
	@$(PULUMI_ENV) pulumi stack output --stack $(STACK)
	@echo ''
	@echo 'Stack outputs (URLs, endpoints; secrets hidden), from this directory:'
	@echo '  $(PULUMI_VARS) pulumi stack output --stack $(STACK)'
	@echo 'The registry admin password:'
	@echo '  $(PULUMI_VARS) pulumi stack output --stack $(STACK) --show-secrets registry_admin_password'
	@echo 'Remove everything again: make down$(if $(filter-out dev,$(STACK)), STACK=$(STACK),)'

# Destroys what `make up` deployed, from the same state; the state and passphrase stay (a later
# `make up` starts from the empty stack).
down: preflight
	$(PULUMI_ENV) pulumi destroy --stack $(STACK) $(if $(YES),--yes,)

system-deps:
	@scripts/system-deps.sh

test: system-deps $(STAMP)
	$(BIN)/ruff check sdk tests stacks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache pyproject.toml
	$(BIN)/python -m pytest -n 2 --dist loadfile

demo: $(STAMP)
	$(BIN)/mlops demo --stack $(STACK)

# A wheel of the package in $(DIST)/, to install into another Pulumi project's virtualenv while
# the package is not on the package index (see docs/use-in-your-project.md).
DIST ?= dist
dist: | $(BIN)/python
	rm -rf build $(DIST)/pulumi_mlops-*.whl
	$(BIN)/python -m pip wheel . --no-deps --quiet -w $(DIST)
	rm -rf build
	@ls $(DIST)/pulumi_mlops-*.whl

render: $(STAMP)
	$(BIN)/mlops render --stack $(STACK) --out-dir out/$(STACK)

lint: $(STAMP)
	$(BIN)/ruff check sdk tests stacks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache pyproject.toml

# Re-pin the runtime image's requirements to what .venv has (after changing pyproject.toml or
# requirements/runtime.in, or upgrading a package in .venv); tests/unit/test_image.py fails when
# they drift.
lock-runtime: | $(BIN)/python
	$(BIN)/python scripts/lock_runtime_requirements.py

# Rewrite the Inputs table of each component's docs page from its args model (field names, types
# and defaults from the model, descriptions from its docstring); tests/unit/test_docs.py fails
# when a page's table is stale.
docs: $(STAMP)
	$(BIN)/python scripts/docs_tables.py --write

clean:
	rm -rf out dist build .pytest_cache .mypy_cache .ruff_cache
