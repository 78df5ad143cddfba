# Two entry points: `make run` and `make test`. Each creates .venv when missing.
VENV      ?= .venv
PY        := $(VENV)/bin/python
DATA_DIR  ?= ./var
LISTEN    ?= 127.0.0.1:8080
# Real clients the tests drive (and the benchmarks' anchors).
APT_TEST  := curl wget tar gzip rrdtool xva-img socat pigz openssl zstd

.PHONY: run test apt-test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/xcp-httpd serve --data-dir $(DATA_DIR) --listen $(LISTEN) \
		--unix-socket $(DATA_DIR)/xapi.sock

apt-test:
	@missing=$$(for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: $(VENV)/.installed apt-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache
