# syntax=docker/dockerfile:1
# The official SGLang serving image with deltainv installed and active.
#
#   docker build -f deploy/docker/sglang.Dockerfile -t deltainv-sglang:0.5.23 .   # from the repository root
#
# Every process SGLang starts (launcher, each TP/PP/DP scheduler, detokenizer; on every node that runs
# this image) loads deltainv through its `sglang.srt.plugins` entry point and activates it from
# DELTAINV_METHOD. Set DELTAINV_METHOD=off at run time for the engine's own kernel (the parity baseline).
# SGLang's tags sometimes carry a CUDA suffix (e.g. v0.5.23-cu129): pass the exact tag you pull.
ARG SGLANG_VERSION=v0.5.23
FROM lmsysorg/sglang:${SGLANG_VERSION}

ARG DELTAINV_METHOD=mxr_refine
ARG DELTAINV_PRECISION=fp32
ARG APP_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY pyproject.toml README.md LICENSE /tmp/deltainv-src/
COPY deltainv/ /tmp/deltainv-src/deltainv/
COPY kernels/ /tmp/deltainv-src/kernels/
COPY plugin/ /tmp/deltainv-src/plugin/
COPY models/ /tmp/deltainv-src/models/
COPY eval/ /tmp/deltainv-src/eval/
COPY bench/ /tmp/deltainv-src/bench/

# The image's packages (torch 2.14.1, triton, sglang, ...) are frozen as constraints: pip adds
# deltainv and lm-eval but cannot replace anything SGLang was built with.
RUN python3 -m pip list --format=freeze > /tmp/engine-constraints.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/engine-constraints.txt "/tmp/deltainv-src[triton,eval]" \
 && rm -rf /tmp/deltainv-src /tmp/engine-constraints.txt \
 && python3 -c "import importlib.metadata as m; eps = [e.value for e in m.entry_points(group='sglang.srt.plugins') if e.name == 'deltainv']; assert eps, 'deltainv sglang plugin not registered'" \
 && useradd --uid "${APP_UID}" --create-home --shell /bin/bash deltainv \
 && mkdir -p /models \
 && chown "${APP_UID}" /models

# SGLang JIT-compiles kernels (FlashInfer, Triton) into $HOME/.cache at first use: HOME must be writable.
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

# `deltainv serve` adds `--linear-attn-prefill-backend triton` when deltainv is active and execs
# `python -m sglang.launch_server`; arguments after `--` go to SGLang unchanged.
ENTRYPOINT ["deltainv", "serve", "--engine", "sglang", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "Qwen/Qwen3-Next-80B-A3B-Instruct"]
