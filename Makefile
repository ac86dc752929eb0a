# Two commands on a fresh Debian/Ubuntu machine, as root: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xpufleet-installed
APT_PACKAGES := openssh-server openssh-client sudo iproute2 iptables faketime procps psmisc util-linux python3-venv python3-dev build-essential curl slurmctld slurmd slurm-client munge

.PHONY: setup demo test unit lint lab-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/invoke demo

# The lab comes down after the tests, even when they fail. compileall first: the tests
# start hundreds of `invoke` processes, and where PYTHONDONTWRITEBYTECODE is set (this
# machine's environment) each would compile every xpufleet module again on import.
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m compileall -q xpufleet >/dev/null
	status=0; $(BIN)/python -m pytest -p no:cacheprovider -q --durations=30 || status=$$?; \
	$(BIN)/invoke lab.down >/dev/null 2>&1 || true; \
	exit $$status

unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

lab-down:
	-$(BIN)/invoke lab.down

clean: lab-down
	rm -rf $(VENV) .lab runs
