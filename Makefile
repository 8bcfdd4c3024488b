# Two entry points for a fresh machine: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := chromium openssh-server postgresql dataset-fashion-mnist \
        debian-reference-en debian-reference-es debian-reference-de debian-reference-ja
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-slow clean

$(STAMP): requirements.lock requirements-assets.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# pinned first: a CPU wheel on local disk; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	# llama-cpp-python has no CPU wheel on PyPI: pip builds llama.cpp from its sdist (~7.5 min on 2 cores, once;
	# pip keeps the built wheel in its cache, so the next set-up installs it in seconds). GGML_NATIVE=OFF: the
	# build does not depend on this exact CPU.
	CMAKE_ARGS="-DGGML_NATIVE=OFF $${CMAKE_ARGS:-}" $(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	# every process of the venv (not only ours: also a user's `from transformers import ...` on an exported hf/ model)
	# imports torchvision through search/torchvision_cpu.py's finder: the registry's torchvision is a CUDA build
	echo "import search" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/search_torchvision_cpu.pth"
	# Debian packages, needing root (else the tests that use them are skipped with a warning): chromium (dashboard
	# browser test), openssh-server (remote-runner test against a loopback sshd), postgresql (several workers on one
	# study, against a real server on loopback), dataset-fashion-mnist (the built-in image task's idx files) and
	# debian-reference-* (the same guide in four languages: the built-in multilingual LM task's slices)
	dpkg -s $(DEBS) >/dev/null 2>&1 || apt-get install -y -q $(DEBS) >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(DEBS) >/dev/null 2>&1) || \
	  echo "warning: not all of $(DEBS) installed; the browser, ssh, worker, Fashion-MNIST and multilingual tests" \
	       "will be skipped"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m search run --target jetson_orin.yaml

test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache
