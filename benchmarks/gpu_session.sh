#!/usr/bin/env bash
# The whole GPU session in one command, for the project's device machine (docs/performance.md).
#
# That machine has PyTorch, transformers and h5py but no lmdb, and cannot reach PyPI. Before the call,
# on the development machine, from the repository root:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl lmdb==1.7.5
# then run this with `.whl` carried:  bash benchmarks/gpu_session.sh [extra gpu_check.py arguments]
# Results land in $OUT (gpu_check.json, gpu_check.md, gpu_check.log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package from the working tree, without installing it (nothing can be fetched there).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -c "import torch, switchbert; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 - <<'EOF' || echo "lmdb missing: the pretrain and host_syncs sections will fail (carry .whl, see above)"
import lmdb
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
