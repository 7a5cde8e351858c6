# syntax=docker/dockerfile:1
# The official vLLM OpenAI server image with deltainv installed and active.
#
#   docker build -f deploy/docker/vllm.Dockerfile -t deltainv-vllm:0.33.0 .     # from the repository root
#
# Every process vLLM starts (API server, engine core, each worker, Ray workers on this image) loads
# deltainv through its `vllm.general_plugins` entry point and activates it from DELTAINV_METHOD.
# Set DELTAINV_METHOD=off at run time for the engine's own kernel (the parity baseline).
ARG VLLM_VERSION=v0.33.0
FROM vllm/vllm-openai:${VLLM_VERSION}

# Activation defaults, baked in as ENV (override per container with -e / env:).
ARG DELTAINV_METHOD=mxr_refine
ARG DELTAINV_PRECISION=fp32
# Unprivileged user the server runs as; /models is its model cache (mount a volume there).
ARG APP_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY pyproject.toml README.md LICENSE /tmp/deltainv-src/
COPY deltainv/ /tmp/deltainv-src/deltainv/
COPY kernels/ /tmp/deltainv-src/kernels/
COPY plugin/ /tmp/deltainv-src/plugin/
COPY models/ /tmp/deltainv-src/models/
COPY eval/ /tmp/deltainv-src/eval/
COPY bench/ /tmp/deltainv-src/bench/

# The image's own packages (torch, triton, transformers, vllm) are frozen as constraints, so pip can
# add deltainv and lm-eval (for `deltainv parity`) but never replace what the engine was built with:
# a conflict fails the build instead of shipping a broken engine.
RUN python3 -m pip list --format=freeze > /tmp/engine-constraints.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/engine-constraints.txt "/tmp/deltainv-src[triton,eval]" \
 && rm -rf /tmp/deltainv-src /tmp/engine-constraints.txt \
 && python3 -c "import importlib.metadata as m; eps = [e.value for e in m.entry_points(group='vllm.general_plugins') if e.name == 'deltainv']; assert eps, 'deltainv vllm plugin not registered'" \
 && useradd --uid "${APP_UID}" --create-home --shell /bin/bash deltainv \
 && mkdir -p /models \
 && chown "${APP_UID}" /models

# PYTHONSAFEPATH: no process puts its working directory first on sys.path (a deltainv checkout
# there would shadow the installed package). HF_HOME: model downloads land on the /models volume.
ENV DELTAINV_METHOD=${DELTAINV_METHOD} \
    DELTAINV_PRECISION=${DELTAINV_PRECISION} \
    PYTHONSAFEPATH=1 \
    HOME=/home/deltainv \
    HF_HOME=/models/hf

USER ${APP_UID}
WORKDIR /home/deltainv
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# `deltainv serve` adds `--gdn-prefill-backend triton` when deltainv is active (the path its kernel
# sits on) and execs vLLM's OpenAI server; arguments after `--` go to vLLM unchanged.
ENTRYPOINT ["deltainv", "serve", "--engine", "vllm", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "Qwen/Qwen3-Next-80B-A3B-Instruct"]
