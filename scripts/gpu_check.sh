#!/bin/bash
# GPU check of deltatune's CUDA / bf16 paths, on tiny random models (the test suite's own).
#
# Runs on a GPU machine that has torch, transformers and peft but no internet and no room for
# the 540 MB SmolLM2: carry the rest as wheels and the tokenizer files only. Prepare, where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl pydantic pydantic_core annotated-types typing-inspection fastapi starlette uvicorn \
#       openai jiter sniffio distro httpx2 httpcore2 truststore opentelemetry-api
#   mkdir -p .devcheck/tokenizer && cp ~/.cache/deltatune/models/smollm2-135m/{*.json,*.jinja} .devcheck/tokenizer/
# then there:  bash scripts/gpu_check.sh      (results also land in $OUT when set)
#
# 1. tests/recipes/test_precision_device.py: bf16 LoRA / full fine-tuning on cuda, a CUDA run
#    reproducing the CPU run, exact resume on CUDA, greedy generation vs transformers on CUDA.
# 2. the whole non-slow suite with model.device=auto, i.e. on the GPU.
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src DELTATUNE_TEST_TOKENIZER_DIR=$PWD/.devcheck/tokenizer HF_HUB_OFFLINE=1 \
       DELTATUNE_HOME=/tmp/dth PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bf16', torch.cuda.is_bf16_supported())"
echo "=== precision/device tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests/recipes/test_precision_device.py 2>&1 | tee "$OUT/precision.log" | tail -15
echo "=== whole non-slow suite with model.device=auto -> cuda"
timeout "${SUITE_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -m "not slow" tests \
    --deselect tests/recipes/test_precision_device.py 2>&1 | tee "$OUT/suite.log" | tail -25
