# The two set-up commands: `make demo` and `make test`. Both create .venv and install gridlb into it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests use (installed only when running as root).
DEB_PKGS := keepalived ipvsadm nftables arptables iproute2 procps psmisc netbase \
            globus-gridftp-server-progs globus-gass-copy-progs haproxy xrootd-server xrootd-client curl wget \
            nginx-light libnginx-mod-http-dav-ext libnginx-mod-http-echo \
            chromium systemd \
            netsniff-ng \
            qemu-system-x86 linux-image-amd64 busybox-static cpio kmod bird2
# The tests that need kernel IPVS, run inside one VM boot by tests/vm/run.sh (`make test-ipvs`).
IPVS_TESTS ?= tests/dataplane/test_ipvs.py tests/e2e/test_ipvs_director.py tests/e2e/test_ipvs_dr.py

.PHONY: demo test test-ipvs venv deb lint typecheck pytest clean bench

$(BIN)/gridlb: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/gridlb

deb:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt-get (privileged tests will be skipped)"; fi

demo: $(BIN)/gridlb
	$(BIN)/gridlb demo

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy src tests bench

pytest: venv deb
	$(BIN)/pytest

# The VM tier: boots Debian's kernel (it has IPVS) under qemu once and runs $(IPVS_TESTS) in it.
# Without qemu or the kernel it is skipped, unless GRIDLB_REQUIRE_PRIVILEGED=1 (then it fails).
test-ipvs: venv deb
	GRIDLB_VM_TESTS="$(IPVS_TESTS)" tests/vm/run.sh

test: lint typecheck pytest test-ipvs

bench: venv deb
	for b in bench/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
