# Two entry points: `make run` and `make test`. Each creates .venv when missing.
VENV      ?= .venv
PY        := $(VENV)/bin/python
DATA_DIR  ?= ./var
LISTEN    ?= 127.0.0.1:8080
# What running needs: QEMU for real VMs, what the agent builds the guest from (busybox,
# e2fsprogs for mkfs.ext4 -d and pygrub's debugfs, cpio for the initramfs), the guest
# networks' bridges (iproute2) and DHCP (dnsmasq-base), and the clients the README's
# examples use (curl, wget, tar, zstd, socat; qemu-img is in qemu-utils); the web page's
# libraries: noVNC (novnc) for the console, Chart.js (libjs-chart.js) for the graphs
APT_RUN   := qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs iproute2 dnsmasq-base \
             curl wget tar zstd socat novnc libjs-chart.js
# Real clients the tests drive (and the benchmarks' anchors); PostgreSQL 15 for the store on
# PostgreSQL (the tests initdb clusters of their own); xfsprogs for a reflinking file system
# (loop-mounted in a mount namespace of the test's own).
APT_TEST  := $(APT_RUN) curl wget tar gzip rrdtool xva-img socat pigz openssl zstd iproute2 util-linux \
             tmux xorriso chromium chromium-driver postgresql-15 xfsprogs
# Xen Orchestra's XenAPI client (npm), run by node from Debian
XO_CLIENT := tests/clients/xo/node_modules/.installed
# Ansible (bundles community.general's XenServer modules), in a venv of its own
ANSIBLE   := .venv-ansible/.installed
ANSIBLE_VERSION := 12.3.0

.PHONY: run test apt-run apt-test node clean

# make run installs what running needs (and the SDK the README's examples use); make test
# adds the test tools. Each stamp says which set is in the venv.
$(VENV)/.installed-run: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[sdk]'
	touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run apt-run
	$(VENV)/bin/xcp-httpd serve --data-dir $(DATA_DIR) --listen $(LISTEN) \
		--unix-socket $(DATA_DIR)/xapi.sock

# apt-get install what is not installed yet, of the packages given
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

apt-run:
	$(call apt_install,$(APT_RUN))

apt-test:
	$(call apt_install,$(APT_TEST))

node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		echo "installing: nodejs npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

$(XO_CLIENT): tests/clients/xo/package.json | node
	cd tests/clients/xo && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

$(ANSIBLE): Makefile
	test -x .venv-ansible/bin/python || python3 -m venv .venv-ansible
	.venv-ansible/bin/pip install -q ansible==$(ANSIBLE_VERSION)
	touch $@

# one worker per core, a module's tests together in one worker (they share its agent)
test: $(VENV)/.installed apt-test $(XO_CLIENT) $(ANSIBLE)
	$(PY) -m pytest -n auto --dist loadfile

clean:
	rm -rf $(VENV) .venv-ansible $(DATA_DIR) .pytest_cache tests/clients/xo/node_modules
