# netfw: the whole set-up on a fresh Debian 12 is `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := iproute2 iptables ipset conntrack iputils-ping netcat-openbsd iperf3 util-linux procps \
                openvswitch-switch ethtool
# The network tools live in /usr/sbin, which an ordinary user's PATH may lack.
export PATH := $(CURDIR)/$(BIN):$(PATH):/usr/sbin:/sbin
TOOLS := ip bridge tc iptables-restore ip6tables-restore ebtables-restore ipset conntrack ping nc iperf3 unshare nsenter \
         sysctl
# Open vSwitch (its tests start a private one on the userspace datapath) and ethtool: installed as root; an ordinary
# user without them gets the Open vSwitch tests skipped, each saying why.
OPTIONAL_TOOLS := ovs-vsctl ovsdb-server ovs-vswitchd ethtool

.PHONY: all deps venv compile demo test unit integration bench bench-quick clean

all: test

# Debian packages: installed when run as root, otherwise a clear message naming what is missing.
deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	optional=""; for t in $(OPTIONAL_TOOLS); do command -v $$t >/dev/null 2>&1 || optional="$$optional $$t"; done; \
	if [ -n "$$optional" ] && [ -z "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then missing="$$optional"; \
	  else echo "not installed:$$optional (the Open vSwitch tests will be skipped; as root: make deps)"; fi; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$(DEB_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) python3-venv >/dev/null; \
	  else \
	    echo "missing tools:$$missing"; \
	    echo "as root, run: apt-get install -y --no-install-recommends $(DEB_PACKAGES) python3-venv"; exit 1; \
	  fi; \
	fi

$(BIN)/netfw: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	$(MAKE) --no-print-directory compile
	@touch $@

venv: $(BIN)/netfw

# Byte-code for netfw's own modules, as a regular pip install writes it: an editable install leaves it to the first
# run, and none is written where PYTHONDONTWRITEBYTECODE is set or the tree is read-only, which costs every netfw
# call ~40 ms of compiling (OpenNebula starts one per driver action). A stale .pyc is ignored (mtime check).
compile:
	$(BIN)/python -m compileall -q netfw

demo: deps venv
	scripts/sandbox scripts/demo.sh

# Unit tests and integration tests (these inside the unprivileged sandbox: no root needed, host network untouched).
test: deps venv
	scripts/sandbox $(BIN)/python -m pytest -q -p no:cacheprovider tests

unit: venv
	$(BIN)/python -m pytest -q tests --ignore=tests/integration

bench: deps venv
	$(BIN)/pip install -q -e '.[bench]'
	$(MAKE) --no-print-directory compile
	scripts/sandbox $(BIN)/python scripts/bench.py

bench-quick: deps venv compile
	scripts/sandbox $(BIN)/python scripts/bench.py --quick --out /tmp/netfw-bench-quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
