# Lifeboat: the front door.  `make backup` and `make test` are the first two commands.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV     ?= .venv
BIN      := $(VENV)/bin
PLAYBOOK := $(BIN)/ansible-playbook
PYTEST   := $(BIN)/pytest
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup lab lab-down lab-purge backup restore verify list monitor lint unit integration molecule fresh-check test bench wheelhouse

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## Install Debian packages and the Python venv (idempotent)
	bash scripts/setup.sh

lab: setup ## Start the local lab (PostgreSQL 15/18, SeaweedFS x2, sample data, keys, .lab/lab.json)
	$(PLAYBOOK) playbooks/lab.yml

lab-down: ## Stop the local lab by PID (data kept)
	$(PLAYBOOK) playbooks/lab_down.yml

lab-purge: ## Stop the local lab and delete its data
	$(PLAYBOOK) playbooks/lab_down.yml -e lab_purge=true

backup: lab ## Back up the lab: the databases (playbooks/backup.yml), then the bucket and the archives (playbooks/storage_backup.yml)
	$(PLAYBOOK) playbooks/backup.yml $(ARGS)
	$(PLAYBOOK) playbooks/storage_backup.yml $(ARGS)

restore: lab ## Restore into the lab (playbooks/restore.yml)
	$(PLAYBOOK) playbooks/restore.yml

verify: lab ## Verify the latest backups (playbooks/verify.yml)
	$(PLAYBOOK) playbooks/verify.yml

list: lab ## List every backup, newest first (playbooks/list.yml; JSON: ARGS='-e lifeboat_list_format=json')
	$(PLAYBOOK) playbooks/list.yml $(ARGS)

monitor: lab ## Check every backup, write metrics and the HTML report, send alerts (playbooks/monitor.yml)
	$(PLAYBOOK) playbooks/monitor.yml $(ARGS)

# Runs all three linters, then fails if any of them failed.
lint: ## ansible-lint (production profile), yamllint, ruff
	rc=0; \
	$(BIN)/yamllint --strict . || rc=1; \
	$(BIN)/ansible-lint --profile production || rc=1; \
	$(BIN)/ruff check $(wildcard library module_utils doc_fragments tests bench roles/lab/files roles/lab/library playbooks/filter_plugins molecule/*/files) || rc=1; \
	exit $$rc

unit: ## Unit tests (no servers)
	$(PYTEST) -q tests/unit

integration: ## Integration tests (need `make lab`)
	$(PYTEST) -q tests/integration

wheelhouse: setup ## Wheels of requirements-runtime.txt in .cache/wheelhouse (lifeboat_install offline mode)
	bash scripts/wheelhouse.sh

molecule: ## Molecule scenarios on podman
	bash scripts/setup.sh --test
	bash scripts/molecule.sh

fresh-check: ## make backup + make verify on a fresh minimal Debian 12 container (podman, own network)
	bash scripts/setup.sh --test
	bash scripts/fresh-check.sh

# The lab stays up through the whole run (integration and molecule use it). Under CI=true
# the lab is purged first, so that its first-run path is tested every time
# (docs/development.md). fresh-check runs last, when podman is usable.
test: ## setup, lab, lint, unit, integration, molecule, fresh-check (in that order)
	bash scripts/setup.sh --test
	$(if $(filter true,$(CI)),$(MAKE) lab-purge)
	$(MAKE) lab
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) molecule
	if podman info >/dev/null 2>&1; then $(MAKE) fresh-check; else echo "make test: podman is not usable here: fresh-check skipped" >&2; fi

bench: lab ## Benchmarks (results in docs/)
	$(BIN)/python bench/run.py
