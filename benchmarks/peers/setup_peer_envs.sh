#!/usr/bin/env bash
# Create the two SEPARATE virtualenvs for the peer steering packages (never /work/venv):
#
#   /work/venv-peer-sv      steering-vectors==0.12.2  (needs transformers < 5)
#   /work/venv-peer-repeng  repeng==0.4.0             (needs numpy < 2)
#
# Each gets torch==2.13.0 (the CPU wheel on this machine's disk; any other torch pulls a
# multi-GB CUDA build), transformers==4.57.6 (the newest 4.x; Gemma 3 text needs >= 4.50)
# and this repository's package installed editable with --no-deps, plus the few libraries
# our scorer and TruthfulQA loader import (safetensors, numpy, tqdm, platformdirs, filelock).
#
# Usage:  bash benchmarks/peers/setup_peer_envs.sh [sv|repeng|all]   (default: all)
# Environment overrides:
#   PYTHON                python used to create the venvs (default: python3.11)
#   SV_VENV, REPENG_VENV  target venvs (defaults above)
#   SV_VERSION            steering-vectors release (default 0.12.2)
#   REPENG_VERSION        repeng release (default 0.4.0)
#   TORCH_VERSION         torch release (default 2.13.0)
#   TRANSFORMERS_VERSION  transformers release (default 4.57.6)
#
# Idempotent: an existing venv is reused and pip only installs what is missing or differs
# from the pins; every step prints what it did.
set -euo pipefail

WHICH="${1:-all}"
PYTHON="${PYTHON:-python3.11}"
SV_VENV="${SV_VENV:-/work/venv-peer-sv}"
REPENG_VENV="${REPENG_VENV:-/work/venv-peer-repeng}"
SV_VERSION="${SV_VERSION:-0.12.2}"
REPENG_VERSION="${REPENG_VERSION:-0.4.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-4.57.6}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUR_DEPS=(safetensors numpy tqdm platformdirs filelock)

log() { echo "[setup_peer_envs] $*"; }

# Run pip, dropping its noise about this machine's empty local index folders.
quiet_pip() {
    "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# setup_one NAME VENV PEER_REQUIREMENT [EXTRA_CONSTRAINT...]
setup_one() {
    local name="$1" venv="$2" peer="$3"
    shift 3
    if [[ -x "${venv}/bin/python" ]]; then
        log "${name}: reusing existing venv ${venv}"
    else
        log "${name}: creating venv ${venv} with ${PYTHON}"
        "${PYTHON}" -m venv "${venv}"
    fi
    local pip=("${venv}/bin/python" -m pip --disable-pip-version-check)
    # The constraints keep transitive requirements from replacing the pinned releases.
    local constraints
    constraints="$(mktemp "${TMPDIR:-/tmp}/peer-constraints.XXXXXX.txt")"
    printf '%s\n' "torch==${TORCH_VERSION}" "transformers==${TRANSFORMERS_VERSION}" "$@" \
        >"${constraints}"
    log "${name}: constraints: $(tr '\n' ' ' <"${constraints}")"

    log "${name}: installing torch==${TORCH_VERSION} (CPU wheel) first"
    quiet_pip "${pip[@]}" install -q -c "${constraints}" "torch==${TORCH_VERSION}"
    log "${name}: installing ${peer}, transformers==${TRANSFORMERS_VERSION}, ${OUR_DEPS[*]}"
    quiet_pip "${pip[@]}" install -q -c "${constraints}" "${peer}" \
        "transformers==${TRANSFORMERS_VERSION}" "${OUR_DEPS[@]}"
    # -I and cd /: ignore the current directory, so only an installed spectral_edit counts
    local installed_from
    installed_from="$(cd / && "${venv}/bin/python" -I -c \
        'import os, spectral_edit; print(os.path.dirname(os.path.dirname(spectral_edit.__file__)))' \
        2>/dev/null || true)"
    if [[ "${installed_from}" == "${REPO}" ]]; then
        log "${name}: spectral_edit already installed editable from ${REPO}"
    else
        log "${name}: installing spectral_edit editable from ${REPO} (--no-deps)"
        quiet_pip "${pip[@]}" install -q --no-deps -e "${REPO}"
    fi
    rm -f "${constraints}"

    log "${name}: checking imports"
    (cd / && "${venv}/bin/python" -I - "${name}") <<'PY'
import sys
from importlib.metadata import version

import torch

name = sys.argv[1]
peer = {"sv": "steering-vectors", "repeng": "repeng"}[name]
for dist in (peer, "transformers", "torch", "numpy", "scikit-learn", "safetensors"):
    print(f"[setup_peer_envs] {name}: {dist}=={version(dist)}")
assert not torch.version.cuda, f"expected a CPU torch build, got CUDA {torch.version.cuda}"
import spectral_edit.data.truthfulqa  # noqa: F401
import spectral_edit.evaluate.scorer  # noqa: F401
import spectral_edit.evaluate.truthfulqa  # noqa: F401

if name == "sv":
    import steering_vectors  # noqa: F401
else:
    import repeng  # noqa: F401
print(f"[setup_peer_envs] {name}: imports OK (peer, spectral_edit scorer and TruthfulQA loader)")
PY
    log "${name}: done: ${venv}/bin/python"
}

case "${WHICH}" in
    sv | all) setup_one sv "${SV_VENV}" "steering-vectors==${SV_VERSION}" ;;&
    repeng | all) setup_one repeng "${REPENG_VENV}" "repeng==${REPENG_VERSION}" "numpy<2" ;;
    sv) ;;
    *) echo "usage: $0 [sv|repeng|all]" >&2; exit 2 ;;
esac
