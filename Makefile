# The two commands of the README: `make run` and `make test`. `make install` is the only
# place that installs anything; it is idempotent (it skips what is there already).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KMS_HOME ?= $(CURDIR)/var

.PHONY: install system-packages run test lint clean

install: system-packages $(STAMP)
	@# Bytecode for the editable install: with PYTHONDONTWRITEBYTECODE (set on these machines)
	@# nothing else writes it, and every `kms serve` start would compile the service again
	@# (0.2-0.35 s of CPU before it serves). Only stale files are rewritten.
	@$(BIN)/python -m compileall -q -j 0 hsm kms gateway >/dev/null

# Debian packages: SoftHSM2 (the dev/test HSM), PostgreSQL (multi-replica tests), wrk (bench),
# nginx-light (the TLS front of the replica topology test), curl (SigV4-signed test requests),
# gcc (builds the fault-injecting PKCS#11 module of tests/reliability/test_hsm_faults.py),
# docker-compose without its recommended Docker engine (`docker-compose config` validates
# docker-compose.yml in tests/deploy; nothing here runs containers).
system-packages:
	@missing=""; bare=""; \
	command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v cc >/dev/null || missing="$$missing gcc libc6-dev"; \
	command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || bare="docker-compose"; \
	if [ -n "$$missing$$bare" ]; then \
	  echo "installing Debian packages:$$missing $$bare"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq || exit 1; \
	  if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; fi; \
	  if [ -n "$$bare" ]; then DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$bare >/dev/null || exit 1; fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/kms init
	@$(BIN)/kms keys show demo >/dev/null 2>&1 || $(BIN)/kms keys create demo
	@$(BIN)/kms xks credentials list default 2>/dev/null | grep -q . || \
	  ( umask 077; $(BIN)/kms xks credentials add default --json < /dev/null > $(KMS_HOME)/xks-credential.json && \
	    echo "XKS credential (shown once) written to $(KMS_HOME)/xks-credential.json" )
	$(BIN)/kms serve --host 127.0.0.1 --port 8000

test: install lint
	$(BIN)/pytest -q --durations=25

lint: install
	$(BIN)/ruff check hsm kms gateway tests
	$(BIN)/mypy --strict hsm kms

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
