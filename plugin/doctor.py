"""``deltainv doctor [--json] [--check-signatures]``: what the engine hooks would do on this machine.

It reports the installed engines and versions (package metadata, nothing imported), which target
functions exist (files on disk), what would be patched with the current ``DELTAINV_*`` settings,
the registered entry points, the engine flags to add, and whether a Triton/GPU path is available.
``--check-signatures`` also imports each existing target module and checks the function's
parameters, as patching would (importing an engine's FLA modules queries GPU 0 where there is one).

``--server URL [--server-log FILE]`` checks a running server instead: what its HTTP API tells
(engine, version, parallel sizes, prefill backend, plugin allowlist) and, from its log, which of
its processes activated deltainv and which ran a patched function (see :func:`server_report`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import platform
import re
import sys
import urllib.error
import urllib.request
from typing import Any

from .settings import TARGET_GROUPS, VARIABLE_BY_NAME, Settings, SettingsError, unknown_variables
from .targets import TARGETS, format_range, installed_version, lookup, module_exists, version_supported

_ENTRY_POINT_GROUPS = ("vllm.general_plugins", "sglang.srt.plugins")


def _entry_points() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for group in _ENTRY_POINT_GROUPS:
        found[group] = next((ep.value for ep in importlib.metadata.entry_points(group=group) if ep.name == "deltainv"),
                            None)
    return found


def _triton() -> dict[str, Any]:
    from deltainv.kernels.backend import triton_available, triton_interpreted, triton_kernels_built

    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        version = None
    import torch

    cuda = torch.cuda.is_available()
    gpu = triton_available() if version else False
    return {
        "triton": version,
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "triton_gpu_driver": gpu,
        "deltainv_triton_kernels": triton_kernels_built(),
        "interpreter": triton_interpreted(),
        "auto_backend_on_cuda": "triton" if (gpu and triton_kernels_built()) else "torch",
        "triton_path_available": bool(gpu and triton_kernels_built()),
    }


def _signature(target) -> str:
    try:
        module = importlib.import_module(target.module)
    except Exception as exc:  # an engine module that cannot be imported here
        return f"import failed: {type(exc).__name__}: {exc}"
    fn = lookup(module, target.attr)[2]
    if fn is None:
        return "missing"
    original = getattr(fn, "__deltainv_target__", None) and inspect.unwrap(fn) or fn
    try:
        params = tuple(inspect.signature(target.checked(original)).parameters)
    except (TypeError, ValueError):
        return "no signature"
    return "ok" if params == target.params else f"changed: {params}"


def _installed(package: str) -> bool:
    """Whether a top-level package is importable (its spec is found; nothing is imported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def report(check_signatures: bool = False, environ=None) -> dict[str, Any]:
    """The doctor's findings as a dict (what ``--json`` prints)."""
    from deltainv import __version__

    from . import core
    from .flags import engine_flags

    try:
        settings, settings_error = Settings.from_env(environ), None
    except SettingsError as exc:
        settings, settings_error = None, str(exc)
    groups = settings.targets if settings else frozenset(TARGET_GROUPS)
    engines: dict[str, Any] = {}
    targets = []
    slots_present: dict[str, bool] = {}
    for target in TARGETS:
        found = installed_version(target.dists)
        if found:
            engines.setdefault(target.group, {"dist": found[0], "version": found[1]})
        exists = bool(found) and module_exists(target.module)
        supported = bool(found) and version_supported(found[1], target.versions)
        slots_present[target.slot] = slots_present.get(target.slot, False) or exists
        entry = {
            "target": target.key,
            "group": target.group,
            "role": target.role,
            "rule": target.rule,
            "engine": f"{found[0]} {found[1]}" if found else None,
            "supported_versions": format_range(target.versions),
            "version_supported": supported,
            "exists": exists,
            "enabled": target.group in groups,
            "would_patch": bool(exists and supported and target.group in groups),
            "note": target.note,
        }
        if check_signatures and exists:
            entry["signature"] = _signature(target)
            entry["would_patch"] = entry["would_patch"] and entry["signature"] == "ok"
        targets.append(entry)
    problems = []
    for target in targets:
        group_engine = engines.get(target["group"])
        if group_engine and not target["version_supported"] and target["enabled"]:
            problems.append(f"{target['target']}: {target['engine']} is outside {target['supported_versions']}")
        if target.get("signature") not in (None, "ok") and target["enabled"]:
            problems.append(f"{target['target']}: {target['signature']}")
    for slot, present in slots_present.items():
        group = next(t.group for t in TARGETS if t.slot == slot)
        if engines.get(group) and not present and group in groups:
            problems.append(f"{slot}: no module of this target exists in the installed {engines[group]['dist']}")
    notes = []
    if "fla" in engines and _installed("flash_qla") and "fla" in groups:
        if settings is not None and settings.active and not settings.force_triton:
            problems.append("flash_qla is installed: fla dispatches chunk_gated_delta_rule to FlashQLA (SM90/SM100/"
                            "SM120) and DELTAINV_FORCE_TRITON=0 keeps it, so deltainv's fla intra will NOT run there")
        else:
            notes.append("flash_qla is installed: fla would dispatch chunk_gated_delta_rule to FlashQLA (SM90/SM100/"
                         "SM120); when active, deltainv's FlashQLA verifier routes it to fla's Triton path")
    for name in unknown_variables(environ):
        problems.append(f"{name} is set but no deltainv code reads it (a typo?); the variables: "
                        f"{', '.join(VARIABLE_BY_NAME)}")
    problems = sorted(set(problems))
    if settings_error:  # first: nothing else matters until the settings are valid
        problems.insert(0, f"invalid settings: {settings_error}")
    return {
        "deltainv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "settings": settings.to_env() if settings else None,
        "settings_error": settings_error,
        "active": bool(settings and settings.active),
        "entry_points": _entry_points(),
        "engines": engines,
        "targets": targets,
        "problems": problems,
        "notes": notes,
        "engine_flags": {e: engine_flags(e, settings) for e in ("vllm", "sglang")} if settings else {},
        "gpu": _triton(),
        "process": core.status(),
    }


# ------------------------------------------------------------------------------------------------
# a running server: are its workers patched?
#
# No engine exposes a process's imported plugins over HTTP, so the API alone cannot prove a worker is
# patched. What it can tell: the engine and version, how many model workers to expect (tensor x
# pipeline [x data] parallel size) and whether the prefill backend is the Triton path deltainv
# patches. The proof per process is deltainv's own log lines, which carry the process id:
# ``deltainv[pid=N] INFO: active (...)`` when a process activates, ``... running deltainv (...)``
# the first time a patched function runs there. vLLM prefixes the engine's lines with
# ``(Role pid=N[, ip=X])`` (APIServer, EngineCore, VllmWorker/Worker, RayWorkerWrapper for Ray
# workers, forwarded from every node), which names the worker processes to expect a line from.

_ACTIVE = re.compile(r"deltainv\[pid=(\d+)\] INFO: active \((.*?)\)")
_RUNNING = re.compile(r"deltainv\[pid=(\d+)\] INFO: running deltainv \((.*?)\) from (\S+?);")
_PROBLEM = re.compile(r"deltainv\[pid=(\d+)\] (WARNING|ERROR): (.*)")
_VLLM_PREFIX = re.compile(r"\((\w[\w-]*?)(?:[ _-](?:TP|PP|DP|EP)?\d+)*(?:[ _-]\w+\d*)* pid=(\d+)(?:, ip=([\d.:a-f]+))?\)")
_WORKER_ROLES = ("VllmWorker", "Worker", "RayWorkerWrapper", "RayWorker")


def analyse_log(text: str) -> dict[str, Any]:
    """Processes named in an engine log and which of them activated / ran deltainv."""
    roles: dict[str, dict[str, Any]] = {}
    for m in _VLLM_PREFIX.finditer(text):
        role, pid, ip = m.group(1), m.group(2), m.group(3)
        entry = roles.setdefault(pid, {"roles": set(), "ip": ip})
        entry["roles"].add(role)
        entry["ip"] = entry["ip"] or ip
    active = {m.group(1): m.group(2) for m in _ACTIVE.finditer(text)}
    running = {m.group(1): m.group(3) for m in _RUNNING.finditer(text)}
    problems = sorted({f"pid {m.group(1)}: {m.group(3)}" for m in _PROBLEM.finditer(text)})
    workers = sorted((pid for pid, e in roles.items() if e["roles"] & set(_WORKER_ROLES)), key=int)
    return {
        "processes": {pid: {"roles": sorted(e["roles"]), "ip": e["ip"]} for pid, e in roles.items()},
        "workers": workers,
        "active": active,
        "running": running,
        "workers_not_active": [p for p in workers if p not in active],
        "deltainv_problems": problems,
    }


def _get_json(url: str, timeout: float) -> Any:
    from urllib.parse import urlsplit

    # A loopback URL (a port-forward) is reached directly, whatever the proxy variables say.
    direct = urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if direct else urllib.request.build_opener()
    try:
        with opener.open(url, timeout=timeout) as r:  # a URL the user gave
            body = r.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


def _int_field(text: str, name: str) -> int | None:
    m = re.search(rf"\b{name}=(\d+)", text)
    return int(m.group(1)) if m else None


def probe_server(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """What the server's HTTP API says (nothing about plugins: no engine exposes that)."""
    base = url.rstrip("/")
    for suffix in ("/v1/completions", "/v1"):
        base = base.removesuffix(suffix)
    out: dict[str, Any] = {"url": base, "engine": None, "version": None, "expected_workers": None,
                           "prefill_backend": None, "plugins_allowlist": None, "notes": []}
    metrics = _get_json(base + "/metrics", timeout)
    if isinstance(metrics, str) and "deltainv_inversion_info" in metrics:
        out["engine"] = "deltainv-hf"
        m = re.search(r"^deltainv_inversion_info\{(.*?)\}\s+([0-9.]+)", metrics, flags=re.M)
        out["hf_inversion"] = {"labels": m.group(1), "value": float(m.group(2))} if m else None
        out["expected_workers"] = 1
        return out
    info = _get_json(base + "/server_info", timeout)
    if not isinstance(info, dict) or ("tp_size" not in info and "vllm_config" not in info):
        # SGLang before /server_info answered /get_server_info only
        legacy = _get_json(base + "/get_server_info", timeout)
        info = legacy if isinstance(legacy, dict) and "tp_size" in legacy else info
    if isinstance(info, dict) and "tp_size" in info:
        out["engine"], out["version"] = "sglang", info.get("version")
        tp, pp = int(info.get("tp_size") or 1), int(info.get("pp_size") or 1)
        dp = 1 if info.get("enable_dp_attention") else int(info.get("dp_size") or 1)
        out["expected_workers"] = tp * pp * dp
        out["prefill_backend"] = info.get("linear_attn_prefill_backend")
        out["nnodes"] = info.get("nnodes")
        out["notes"].append("SGLang does not expose SGLANG_PLUGINS or DELTAINV_* over HTTP")
        return out
    version = _get_json(base + "/version", timeout)
    if isinstance(version, dict) and "version" in version:
        out["engine"], out["version"] = "vllm", version["version"]
        if isinstance(info, dict) and isinstance(info.get("vllm_config"), str):
            cfg = info["vllm_config"]
            sizes = [_int_field(cfg, f"{k}_parallel_size") for k in ("tensor", "pipeline", "data")]
            if all(sizes):
                out["expected_workers"] = sizes[0] * sizes[1] * sizes[2]
            env = info.get("vllm_env") if isinstance(info.get("vllm_env"), dict) else {}
            out["plugins_allowlist"] = env.get("VLLM_PLUGINS")
        else:
            out["notes"].append("vLLM's /server_info answers only with VLLM_SERVER_DEV_MODE=1: "
                                "parallel sizes and VLLM_PLUGINS unknown")
        out["notes"].append("vLLM does not expose DELTAINV_* or the GDN prefill backend over HTTP")
        return out
    out["notes"].append("no vLLM (/version), SGLang (/server_info) or deltainv hf (/metrics) server answered")
    return out


def server_report(url: str, log_text: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Is a running server's every worker patched? ``verdict``: ``patched``, ``not patched`` or
    ``unknown`` (the API alone cannot tell; give the server's log)."""
    server = probe_server(url, timeout)
    problems: list[str] = []
    log = analyse_log(log_text) if log_text is not None else None
    allow = server.get("plugins_allowlist")
    if allow is not None and "deltainv" not in [p.strip() for p in str(allow).split(",")]:
        problems.append(f"VLLM_PLUGINS={allow!r} does not list deltainv: vLLM loads no deltainv plugin")
    if server["engine"] == "sglang" and server["prefill_backend"] not in (None, "triton"):
        problems.append(f"SGLang's linear-attention prefill backend is {server['prefill_backend']!r}: the patched "
                        "Triton path does not run (start it with --linear-attn-prefill-backend triton)")
    if server["engine"] is None:
        problems.append(server["notes"][-1])
    if server["engine"] == "deltainv-hf":
        hf = server.get("hf_inversion")
        patched = bool(hf and hf["value"] >= 1)
        if not patched:
            problems.append("the embedded server reports deltainv_inversion_info 0: deltainv is off")
        verdict = "patched" if patched else "not patched"
    elif log is None:
        verdict = "unknown"
    else:
        expected = server["expected_workers"]
        if not log["active"]:
            problems.append("no process logged `deltainv[pid=N] INFO: active`: deltainv is off "
                            "(DELTAINV_METHOD unset/off) or not installed in the server's environment")
        if log["workers_not_active"]:
            names = ", ".join(f"pid {p}" + (f" ({log['processes'][p]['ip']})" if log["processes"][p]["ip"] else "")
                              for p in log["workers_not_active"])
            problems.append(f"worker process(es) that never activated deltainv: {names}")
        if expected and len(log["running"]) < expected:
            problems.append(f"{len(log['running'])} of {expected} expected workers ran a patched function "
                            "(send a prompt first: the line is logged at the first prefill)")
        problems.extend(log["deltainv_problems"])
        verdict = "not patched" if problems else ("patched" if log["running"] else "unknown")
    return {"server": server, "log": log, "problems": problems, "verdict": verdict}


def _print_server(data: dict[str, Any]) -> None:
    w = sys.stdout.write
    s = data["server"]
    w(f"server {s['url']}: {s['engine'] or 'unknown engine'}{' ' + str(s['version']) if s['version'] else ''}\n")
    if s["expected_workers"]:
        w(f"  expected model workers: {s['expected_workers']}\n")
    if s.get("prefill_backend"):
        w(f"  linear-attention prefill backend: {s['prefill_backend']}\n")
    for note in s["notes"]:
        w(f"  note: {note}\n")
    log = data["log"]
    if log is not None:
        w(f"log: {len(log['processes'])} engine processes named, {len(log['workers'])} workers; "
          f"deltainv active in {len(log['active'])} processes, ran in {len(log['running'])}\n")
        for pid, where in sorted(log["running"].items(), key=lambda kv: int(kv[0])):
            roles = ",".join(log["processes"].get(pid, {}).get("roles", [])) or "?"
            w(f"  pid {pid} ({roles}): ran deltainv from {where}\n")
    elif s["engine"] != "deltainv-hf":
        w("log: none given (--server-log): the API cannot tell whether workers are patched\n")
    w("problems: " + ("none" if not data["problems"] else "") + "\n")
    for p in data["problems"]:
        w(f"  - {p}\n")
    w(f"workers patched: {data['verdict']}\n")


def _print(data: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"deltainv {data['deltainv']} (Python {data['python']}, {data['platform']})\n")
    if data["settings_error"]:
        w(f"settings: INVALID: {data['settings_error']}\n")
    else:
        s = data["settings"]
        state = "active" if data["active"] else "off (DELTAINV_METHOD unset or 'off': engines untouched)"
        w(f"settings: {state}; " + " ".join(f"{k}={v}" for k, v in s.items() if k != "DELTAINV_OPTIONS" or v) + "\n")
    w("entry points: " + ", ".join(f"{g}: {'registered' if v else 'MISSING'}" for g, v in data["entry_points"].items())
      + "\n")
    w("engines:\n")
    names = {"fla": "fla", "vllm": "vLLM", "vllm_cpu": "vLLM CPU build", "sglang": "SGLang", "transformers": "transformers"}
    for group in TARGET_GROUPS:
        e = data["engines"].get(group)
        w(f"  {names[group]:<15} {e['dist'] + ' ' + e['version'] if e else 'not installed'}\n")
    w("targets (exists on disk / version supported / would patch):\n")
    for t in data["targets"]:
        if not t["engine"]:
            continue
        sig = f" signature {t['signature']}" if "signature" in t else ""
        flags = f"{'yes' if t['exists'] else 'no ':<3} / {'yes' if t['version_supported'] else 'no ':<3} / " \
                f"{'YES' if t['would_patch'] else 'no'}"
        w(f"  {flags:<18} {t['target']} [{t['role']}]{sig}\n")
    w("problems: " + ("none" if not data["problems"] else "") + "\n")
    for p in data["problems"]:
        w(f"  - {p}\n")
    for n in data["notes"]:
        w(f"note: {n}\n")
    g = data["gpu"]
    w(f"GPU/Triton: torch {g['torch']}, triton {g['triton'] or 'not installed'}, CUDA device "
      f"{g['cuda_device'] or 'none'}, Triton GPU driver {'yes' if g['triton_gpu_driver'] else 'no'}, deltainv Triton "
      f"kernels {'built' if g['deltainv_triton_kernels'] else 'missing'}\n")
    w(f"  Triton/GPU path available: {'yes' if g['triton_path_available'] else 'no'} "
      f"(backend 'auto' on CUDA tensors -> {g['auto_backend_on_cuda']}; CPU tensors -> torch)\n")
    if data["engine_flags"]:
        w("engine flags to add: " + "; ".join(f"{e}: {' '.join(f) or '(none)'}" for e, f in data["engine_flags"].items())
          + "\n")


def run(args: argparse.Namespace) -> int:
    if args.server:
        log_text = None
        if args.server_log:
            log_text = sys.stdin.read() if args.server_log == "-" else open(args.server_log, errors="replace").read()
        data = server_report(args.server, log_text)
        if args.json:
            json.dump(data, sys.stdout, indent=1, default=str)
            sys.stdout.write("\n")
        else:
            _print_server(data)
        return {"patched": 0, "unknown": 0}.get(data["verdict"], 1) if not data["problems"] else 1
    if args.server_log:
        print("deltainv doctor: --server-log needs --server", file=sys.stderr)
        return 2
    data = report(check_signatures=args.check_signatures)
    if args.json:
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        _print(data)
    return 1 if data["settings_error"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="installed engines, which deltainv targets exist and would be patched, Triton/GPU availability",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--check-signatures", action="store_true",
                   help="also import each existing target module and check the function's parameters "
                        "(imports engine modules; on a GPU machine they query GPU 0)")
    p.add_argument("--server", metavar="URL",
                   help="check a running vLLM/SGLang/deltainv server instead (e.g. http://127.0.0.1:8000): what its "
                        "API tells; with --server-log, which of its processes are patched")
    p.add_argument("--server-log", metavar="FILE",
                   help="the server's log (stdout+stderr; '-' reads stdin, e.g. `kubectl logs POD | deltainv doctor "
                        "--server URL --server-log -`): every worker must log deltainv's `active` line")
    p.set_defaults(func=run)


__all__ = ["analyse_log", "probe_server", "register", "report", "run", "server_report"]
