#!/usr/bin/env bash
# Create or update .venv with deltainv and everything its tests and CLI need, CPU-only.
#
#   scripts/setup.sh            # idempotent; re-installs only when pyproject/constraints change
#
# torch is pinned to 2.13.0 in the same pip command as everything that depends on it, so pip
# takes the local CPU wheel and never resolves a multi-GB CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${DELTAINV_VENV:-.venv}
EXTRAS=${DELTAINV_EXTRAS:-triton,fla,dev,eval,serve}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PY --version)" >&2
    "$PY" -m venv "$VENV"
fi

stamp="$VENV/.deltainv-setup"
want=$(cat pyproject.toml constraints/cpu.txt scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $VENV is up to date" >&2
    exit 0
fi

echo "[setup] installing deltainv[$EXTRAS] (torch==2.13.0, CPU) into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c constraints/cpu.txt "torch==2.13.0" -e ".[$EXTRAS]"
"$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.version.cuda, f"a CUDA torch was installed ({torch.version.cuda}); expected the CPU wheel"
PY
echo "$want" > "$stamp"
echo "[setup] done" >&2
