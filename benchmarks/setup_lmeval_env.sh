#!/usr/bin/env bash
# Create a SEPARATE virtualenv with lm-evaluation-harness (lm_eval) for the TruthfulQA
# reference run (benchmarks/run_lmeval_truthfulqa.py). It never touches the project's env.
#
# Usage:  bash benchmarks/setup_lmeval_env.sh [VENV_DIR]
#   VENV_DIR       target virtualenv (default: $LMEVAL_VENV or /work/venv-lmeval)
# Environment overrides:
#   PYTHON                python used to create the venv (default: python3)
#   LMEVAL_VERSION        lm_eval release (default: 0.4.13)
#   TORCH_VERSION         torch release (default: 2.13.0, the CPU wheel on this machine's disk;
#                         an unpinned torch would pull a multi-GB CUDA build)
#   TRANSFORMERS_VERSION  transformers release (default: 5.24.0, same as the project)
#
# Idempotent: re-running on an existing venv only installs what is missing.
set -euo pipefail

VENV_DIR="${1:-${LMEVAL_VENV:-/work/venv-lmeval}}"
PYTHON="${PYTHON:-python3}"
LMEVAL_VERSION="${LMEVAL_VERSION:-0.4.13}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"

if [[ ! -x "${VENV_DIR}/bin/python" ]]; then
    echo "[setup_lmeval_env] creating virtualenv ${VENV_DIR}"
    "${PYTHON}" -m venv "${VENV_DIR}"
fi
PIP=("${VENV_DIR}/bin/python" -m pip --disable-pip-version-check)

# Constraints keep every transitive requirement (lm_eval, accelerate, peft, ...) from
# replacing torch or transformers with other releases.
CONSTRAINTS="$(mktemp "${TMPDIR:-/tmp}/lmeval-constraints.XXXXXX.txt")"
trap 'rm -f "${CONSTRAINTS}"' EXIT
printf 'torch==%s\ntransformers==%s\n' "${TORCH_VERSION}" "${TRANSFORMERS_VERSION}" \
    >"${CONSTRAINTS}"

echo "[setup_lmeval_env] installing torch==${TORCH_VERSION} first (CPU wheel)"
"${PIP[@]}" install -c "${CONSTRAINTS}" "torch==${TORCH_VERSION}"

echo "[setup_lmeval_env] installing lm_eval==${LMEVAL_VERSION}," \
    "transformers==${TRANSFORMERS_VERSION}"
"${PIP[@]}" install -c "${CONSTRAINTS}" \
    "lm_eval==${LMEVAL_VERSION}" "transformers==${TRANSFORMERS_VERSION}" accelerate

"${VENV_DIR}/bin/python" - <<'EOF'
from importlib.metadata import version

import torch

for name in ("lm_eval", "transformers", "torch", "datasets", "accelerate"):
    print(f"[setup_lmeval_env] {name}=={version(name)}")
assert not torch.version.cuda, f"expected a CPU torch build, got CUDA {torch.version.cuda}"
import lm_eval.models.huggingface  # noqa: F401  (fails early if lm_eval/transformers clash)
print("[setup_lmeval_env] OK")
EOF
echo "[setup_lmeval_env] done: ${VENV_DIR}/bin/python"
