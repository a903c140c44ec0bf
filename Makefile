# The project's vocabulary. Every target installs what it needs when it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
STACK ?= dev
# Hypervisors in the lab: 1, or 2 for a stack placed on two (make lab HOSTS=2; the dev2 stack needs them).
HOSTS ?= $(if $(filter dev2,$(STACK)),2,1)
# Build caches shared by every clone on this machine (toolchain binaries, golden image), keyed by pins.
export HACLUSTER_CACHE ?= $(HOME)/.cache/hacluster
export HACLUSTER_NETNS ?= halab

TOOLS := $(ROOT)/.tools/bin
VENV := $(ROOT)/venv
PY := $(VENV)/bin/python

export PATH := $(TOOLS):$(VENV)/bin:$(PATH)
export PULUMI_HOME ?= $(ROOT)/.pulumi-home
export PULUMI_BACKEND_URL ?= file://$(ROOT)/.state
# Every pulumi command runs through model/passphrase.py: a lab stack on the file backend gets the built-in
# passphrase unless PULUMI_CONFIG_PASSPHRASE is set; any other stack needs the user's (or a secrets provider).
WITH_PASSPHRASE = $(PY) -m model.passphrase $(STACK) --
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true

.PHONY: help deps toolchain venv image lab lab-down forward up preview destroy \
        test test-unit test-integration test-e2e bench lint

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## Debian packages (qemu, libvirt, nginx, keepalived, debootstrap, ...) and the VRRP script user
	@bash scripts/deps.sh
	@id keepalived_script >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin keepalived_script

toolchain: ## Build pulumi CLI, language host and provider plugins from Go modules into .tools/bin
	@bash toolchain/build.sh

venv: $(VENV)/.stamp ## Python virtualenv from requirements.txt
$(VENV)/.stamp: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

image: deps ## Golden Debian 12 image (debootstrap) into .images/
	@bash image/build.sh

lab: deps ## Start the sandboxed libvirt inside network namespace $(HACLUSTER_NETNS) (HOSTS=2: and two hypervisors)
	@HACLUSTER_LAB_HOSTS=$(HOSTS) bash scripts/lab.sh up

lab-down: ## Stop what `make lab` started
	@bash scripts/lab.sh down

forward: ## Forward 127.0.0.1:8080 to the lab VIP (Ctrl-C to stop)
	@bash scripts/forward.sh

.state:
	mkdir -p .state

# A lab stack file carries the built-in passphrase's salt (so `make up` leaves it unchanged): with a passphrase
# of your own, pulumi refuses it as "incorrect passphrase" until that line is gone.
stack: toolchain venv .state
	pulumi stack select $(STACK) 2>/dev/null || $(WITH_PASSPHRASE) pulumi stack init $(STACK) || { \
	  echo "make stack: pulumi stack init $(STACK) failed; if it said 'incorrect passphrase', Pulumi.$(STACK).yaml's encryptionsalt is another passphrase's: delete that line to use yours" >&2; exit 1; }

# Before pulumi: a killed earlier run's stale lock and pending operations are cleared, anything else that
# holds the stack is named (scripts/recover.py). Its `pulumi stack export/import` (clearing pending operations)
# needs the stack's secrets passphrase like any pulumi command: run through $(WITH_PASSPHRASE).
RECOVER = $(WITH_PASSPHRASE) $(PY) scripts/recover.py --stack $(STACK)

# The lab starts only for a lab stack (labNetns set): a stack on a hypervisor of your own needs none, and the
# lab refuses to start beside a libvirtd it did not start.
LAB_IF_LAB = if $(PY) -m model.passphrase --is-lab $(STACK); then HACLUSTER_LAB_HOSTS=$(HOSTS) bash scripts/lab.sh up; fi

up: deps toolchain venv image stack ## Deploy the $(STACK) stack (pulumi up --yes) and show its verification
	@$(LAB_IF_LAB)
	$(RECOVER) --clear-pending
	$(WITH_PASSPHRASE) pulumi up --yes --stack $(STACK)
	@$(PY) scripts/summary.py "$$($(WITH_PASSPHRASE) pulumi stack output --json --stack $(STACK))"

preview: deps toolchain venv stack
	$(RECOVER)
	$(WITH_PASSPHRASE) pulumi preview --stack $(STACK)

destroy: deps toolchain venv ## Remove every VM, volume, disk and network of $(STACK)
	@$(LAB_IF_LAB)
	$(RECOVER) --clear-pending
	$(WITH_PASSPHRASE) pulumi destroy --yes --stack $(STACK)

lint: venv
	$(VENV)/bin/ruff check .

test: lint test-unit test-integration test-e2e ## Every test tier

test-unit: deps venv ## Settings, rendering (nginx -t, keepalived -t), resource graph with mocks
	$(PY) -m pytest -q tests/unit

# Three at a time (pytest-xdist): each test's lab is namespaces of its own, and most of a test is waiting
# for keepalived and the health agents (8 min one by one, about 3.5 min so on this 2-core machine).
test-integration: deps venv ## Real nginx + keepalived in network namespaces, the verifier against them
	$(PY) -m pytest -q -n 3 tests/integration

test-e2e: HOSTS = 2
test-e2e: deps toolchain venv image lab .state ## Real pulumi up/destroy of four VMs in the lab (one host, then two)
	$(PY) -m model.passphrase --lab -- $(PY) -m pytest -q -s --durations=15 tests/e2e

bench: HOSTS = 2
bench: deps toolchain venv image lab ## Deploy/failover/overhead benchmarks -> bench/results/latest.json
	$(PY) -m model.passphrase --lab -- $(PY) -m bench
