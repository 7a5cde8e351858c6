"""Helpers for the deploy/ tests: the validators (installed into the venv by scripts/setup.sh from
the dev extra), rendering the kustomizations, and extracting deltainv invocations from every file."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILES = {"vllm": DEPLOY / "docker" / "vllm.Dockerfile", "sglang": DEPLOY / "docker" / "sglang.Dockerfile"}
#: Kubernetes versions the manifests must validate against (oldest and newest supported).
K8S_VERSIONS = ("1.29.0", "1.37.0")


def tool(name: str) -> str:
    """A validator's executable: beside this Python (the venv's bin), else on PATH; fail naming its installer."""
    here = Path(sys.executable).with_name(name)
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found beside {sys.executable} or on PATH: run scripts/setup.sh (dev extra)")
    return found


def kubectl() -> str:
    """kubectl with its built-in kustomize (v5) renders the kustomizations offline."""
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is missing: the kustomizations are rendered with `kubectl kustomize` "
                    "(kustomize v5 is built into kubectl >= 1.27)")
    return found


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def render(path: Path) -> list[dict]:
    """``kubectl kustomize PATH`` as a list of resources."""
    proc = run([kubectl(), "kustomize", str(path)])
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_text(path: Path) -> str:
    proc = run([kubectl(), "kustomize", str(path)])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def k8s_validate(path: Path, version: str) -> subprocess.CompletedProcess:
    """Strict schema validation (unknown fields are errors) against Kubernetes ``version``, offline."""
    return run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)])


def find(resources: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(hits) == 1, (kind, name, [(r["kind"], r["metadata"]["name"]) for r in resources])
    return hits[0]


def configmap_for(resources: list[dict], container: dict) -> dict[str, str]:
    """The merged data of the ConfigMaps a container takes with envFrom."""
    data: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        data.update(find(resources, "ConfigMap", ref["configMapRef"]["name"])["data"])
    return data


def expand_k8s(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command/args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def compose_defaults(text: str) -> str:
    """Compose interpolation with every variable unset: ``${X:-default}`` -> default, ``${X}`` -> ''."""
    pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-((?:[^{}]|\{[^{}]*\})*))?\}")
    previous = None
    while previous != text:
        previous, text = text, pattern.sub(lambda m: m.group(2) or "", text)
    return text


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def exec_form(rest: str) -> list[str]:
    import json

    return json.loads(rest)


# ------------------------------------------------------------------------------------------------
# the deltainv CLI's own vocabulary

def deltainv_bin() -> str:
    return tool("deltainv")


_HELP_CACHE: dict[str, set[str]] = {}


def help_flags(sub: str) -> set[str]:
    """Option names ``deltainv SUB --help`` prints."""
    if sub not in _HELP_CACHE:
        proc = run([deltainv_bin(), sub, "--help"], env={**os.environ, "COLUMNS": "200"}, cwd=DEPLOY)
        assert proc.returncode == 0, proc.stderr
        _HELP_CACHE[sub] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", proc.stdout))
    return _HELP_CACHE[sub]


def check_invocation(argv: list[str]) -> list[str]:
    """Problems with one ``deltainv SUB ...`` argv: options ``deltainv SUB --help`` does not list, or
    values the real parser rejects. Arguments after ``--`` belong to the engine and are not checked."""
    if not argv or Path(argv[0]).name != "deltainv" or len(argv) < 2:
        return [f"not a deltainv invocation: {argv}"]
    sub, rest = argv[1], argv[2:]
    ours = rest[: rest.index("--")] if "--" in rest else rest
    known = help_flags(sub)
    problems = [f"deltainv {sub}: {a.split('=')[0]} is not an option of `deltainv {sub} --help`"
                for a in ours if a.startswith("--") and a.split("=")[0] not in known]
    from deltainv.cli import build_parser

    parser = build_parser()
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(ValueError(message))  # type: ignore[method-assign]
    parser.error = lambda message: (_ for _ in ()).throw(ValueError(message))  # type: ignore[method-assign]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for subparser in action.choices.values():
            subparser.exit = parser.exit
            subparser.error = parser.error
    try:
        parser.parse_args([sub, *rest])
    except ValueError as exc:
        problems.append(f"deltainv {sub}: the parser rejects {shlex.join(rest)}: {exc}")
    return problems


def check_variables(assignments: list[tuple[str, str | None]]) -> list[str]:
    """Problems with DELTAINV_* names (and literal values) used in deploy/."""
    from deltainv.plugin.settings import VARIABLE_BY_NAME, Settings, SettingsError

    problems = []
    for name, value in assignments:
        if name not in VARIABLE_BY_NAME:
            problems.append(f"{name} is not a deltainv variable (plugin.settings.VARIABLES)")
        elif value is not None and "$" not in value:
            try:
                Settings.from_env({name: value})
            except SettingsError as exc:
                problems.append(str(exc))
    return problems
