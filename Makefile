# netfw: the whole set-up on a fresh Debian 12 is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := iproute2 iptables ipset conntrack iputils-ping netcat-openbsd iperf3 util-linux procps \
                openvswitch-switch ethtool nftables $(LIBVIRT_PACKAGES)
# A private libvirtd and QEMU for tests/integration/test_libvirt_*.py (no libvirt-daemon-system: it brings services
# and a default network); busybox-static is what guest_assets puts in the guest.
LIBVIRT_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 busybox-static
# The network tools live in /usr/sbin, which an ordinary user's PATH may lack.
export PATH := $(CURDIR)/$(BIN):$(PATH):/usr/sbin:/sbin
TOOLS := ip bridge tc iptables-restore ip6tables-restore ebtables-restore ipset conntrack ping nc iperf3 unshare nsenter \
         sysctl
# Open vSwitch (its tests start a private one on the userspace datapath), ethtool, nft (bench_hop's nftables rungs),
# libvirt and QEMU: installed as root; an ordinary user without them gets those tests skipped, each saying why.
OPTIONAL_TOOLS := ovs-vsctl ovsdb-server ovs-vswitchd ethtool nft libvirtd virsh qemu-system-x86_64

.PHONY: all deps venv compile demo test unit integration bench bench-quick bench-scale clean deb deb-deps guest-assets

all: test

# Debian packages: installed when run as root, otherwise a clear message naming what is missing.
deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	optional=""; for t in $(OPTIONAL_TOOLS); do command -v $$t >/dev/null 2>&1 || optional="$$optional $$t"; done; \
	if [ -n "$$optional" ] && [ -z "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then missing="$$optional"; \
	  else echo "not installed:$$optional (the Open vSwitch or libvirt tests will be skipped; as root: make deps)"; fi; \
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
# Then the real-libvirt tests (a private libvirtd booting QEMU guests): as root in `scripts/sandbox --all-ids`; for
# anyone else in the ordinary sandbox, where they are reported as skipped, with the reason.
LIBVIRT_TESTS := tests/integration/test_libvirt_*.py
test: deps venv
	@$(MAKE) --no-print-directory deb-deps deb-wheels || echo "tests/test_deb.py will be skipped: see above"
	@$(MAKE) --no-print-directory guest-assets || echo "the libvirt tests will be skipped: see above"
	scripts/sandbox $(BIN)/python -m pytest -q -p no:cacheprovider tests --ignore-glob='$(LIBVIRT_TESTS)'
	if [ "$$(id -u)" = 0 ]; then all_ids=--all-ids; else all_ids=; fi; \
	    scripts/sandbox $$all_ids $(BIN)/python -m pytest -q -p no:cacheprovider -rs $(LIBVIRT_TESTS)

# The libvirt tests' guest (kernel and busybox initramfs from Debian packages, cached under build/guest/): the
# download needs the network, which the sandbox has not. Only where those tests can run (root, QEMU installed).
guest-assets: venv
	@if [ "$$(id -u)" = 0 ] && command -v qemu-system-x86_64 >/dev/null; then \
	    $(BIN)/python -m tests.integration.guest_assets; fi

unit: venv
	$(BIN)/python -m pytest -q tests --ignore=tests/integration

bench: deps venv
	$(BIN)/pip install -q -e '.[bench]'
	$(MAKE) --no-print-directory compile
	scripts/sandbox $(BIN)/python scripts/bench.py

bench-quick: deps venv compile
	scripts/sandbox $(BIN)/python scripts/bench.py --quick --out /tmp/netfw-bench-quick

# The scale table alone (make bench runs it too): N = 100, 300, 1,000 attached NICs, into docs/benchmarks/scale.md.
bench-scale: deps venv compile
	scripts/sandbox $(BIN)/python scripts/bench_scale.py

# The Debian package (debian/): $(DEB_DIST)/netfw_<version>_all.deb, checked by lintian (no error allowed).
#   make deb          everything: the Debian build tools (installed as root, named otherwise), the wheels of netfw's
#                     Python dependencies (deb-wheels: the only step that needs the network), then deb-build
#   make deb-build    the package from the source tree and those wheels, offline (what tests/test_deb.py runs)
DEB_TOOLS := dh dpkg-buildpackage visudo lintian
DEB_BUILD_PACKAGES := debhelper dpkg-dev sudo lintian python3-venv
DEB_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' netfw/__init__.py)
DEB_SOURCES := pyproject.toml README.md netfw scripts/opennebula scripts/libvirt contrib docs/opennebula.md debian
DEB_BUILD ?= build/deb
DEB_DIST ?= dist
DEB_WHEELS ?= build/wheels

deb: deb-deps venv deb-wheels
	$(MAKE) --no-print-directory deb-build

deb-deps:
	@missing=""; for t in $(DEB_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEB_BUILD_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(DEB_BUILD_PACKAGES) >/dev/null; \
	  else \
	    echo "missing tools:$$missing; as root, run: apt-get install -y --no-install-recommends $(DEB_BUILD_PACKAGES)"; \
	    exit 1; \
	  fi; \
	fi

# netfw's Python dependencies as pyproject.toml lists them, as wheels (all pure Python).
deb-wheels: venv
	@mkdir -p $(DEB_WHEELS)
	$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
	    > $(DEB_WHEELS)/requirements.new
	$(BIN)/pip download -q --only-binary=:all: --dest $(DEB_WHEELS) -r $(DEB_WHEELS)/requirements.new
	@mv $(DEB_WHEELS)/requirements.new $(DEB_WHEELS)/requirements.txt  # last: it says the wheels are all there

deb-build: venv
	@test -s $(DEB_WHEELS)/requirements.txt || { echo "no wheels in $(DEB_WHEELS): make deb-wheels (needs the network)"; exit 1; }
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/netfw-$(DEB_VERSION) $(DEB_DIST)
	tar -c --exclude=__pycache__ $(DEB_SOURCES) | tar -x -C $(DEB_BUILD)/netfw-$(DEB_VERSION)
	{ printf 'netfw (%s) unstable; urgency=medium\n\n  * netfw %s, built from %s.\n\n -- %s  %s\n' \
	    "$(DEB_VERSION)" "$(DEB_VERSION)" "$$(git describe --always --dirty 2>/dev/null || echo a source tree)" \
	    "$$(sed -n 's/^Maintainer: //p' debian/control)" \
	    "$$(date -R -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))"; } \
	    > $(DEB_BUILD)/netfw-$(DEB_VERSION)/debian/changelog
	cd $(DEB_BUILD)/netfw-$(DEB_VERSION) && PIP=$(abspath $(BIN)/pip) WHEELS=$(abspath $(DEB_WHEELS)) \
	    dpkg-buildpackage -b -us -uc --no-sign >../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	cp $(DEB_BUILD)/netfw_$(DEB_VERSION)_all.deb $(DEB_DIST)/
	lintian --fail-on error $(DEB_DIST)/netfw_$(DEB_VERSION)_all.deb 2>&1 | grep -v '^running with root privileges'; \
	    exit $${PIPESTATUS[0]}
	@echo "built $(DEB_DIST)/netfw_$(DEB_VERSION)_all.deb"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist
