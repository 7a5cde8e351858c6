"""Every deltainv flag and DELTAINV_* variable used in deploy/ is one the CLI and plugin accept.

Invocations are taken from each place that starts deltainv (Dockerfile ENTRYPOINT/CMD, compose
commands, the rendered Kubernetes containers, the Argo template, deploy/README.md's commands); their
options are checked against ``deltainv SUB --help`` and the argv is parsed by the real parser.
Variables are checked against ``plugin.settings.VARIABLES`` and their literal values by ``Settings``.
"""

import re
import shlex

import pytest
import yaml
from deploy_testing import (DEPLOY, DOCKERFILES, K8S, check_invocation, check_variables, compose_defaults,
                            configmap_for, dockerfile_instructions, exec_form, expand_k8s, render)

README = DEPLOY / "README.md"


def _entrypoints() -> dict[str, list[str]]:
    """image name -> the ENTRYPOINT of the Dockerfile that builds it."""
    out = {}
    for engine, path in DOCKERFILES.items():
        instr = dockerfile_instructions(path)
        out[f"deltainv-{engine}"] = exec_form(next(r for w, r in instr if w == "ENTRYPOINT"))
    return out


def _image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":")[0]


def invocations() -> list[tuple[str, list[str]]]:
    found = []
    for engine, path in DOCKERFILES.items():
        instr = dockerfile_instructions(path)
        entry = exec_form(next(r for w, r in instr if w == "ENTRYPOINT"))
        cmd = exec_form(next(r for w, r in instr if w == "CMD"))
        found.append((path.name, entry + cmd))
    entries = _entrypoints()
    compose = yaml.safe_load(compose_defaults((DEPLOY / "compose.yaml").read_text()))["services"]
    for name, svc in compose.items():
        entry = svc.get("entrypoint") or entries[_image_name(svc["image"])]
        found.append((f"compose.yaml:{name}", entry + shlex.split(svc.get("command", ""))))
    for kust in ("base", "sglang", "gate"):
        res = render(K8S / kust)
        for r in res:
            if r["kind"] not in ("Deployment", "Job"):
                continue
            for c in r["spec"]["template"]["spec"]["containers"]:
                env = configmap_for(res, c)
                entry = c.get("command") or entries[_image_name(c["image"])]
                found.append((f"k8s/{kust}:{r['metadata']['name']}", expand_k8s(entry + c.get("args", []), env)))
    tmpl = yaml.safe_load((K8S / "argo" / "analysis-template.yaml").read_text())
    defaults = {a["name"]: a.get("value", "example") for a in tmpl["spec"]["args"]}
    c = tmpl["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: re.sub(r"\{\{args\.([a-z-]+)\}\}", lambda m: defaults[m.group(1)], e.get("value", ""))
           for e in c["env"]}
    found.append(("argo/analysis-template.yaml", expand_k8s(c["command"] + c["args"], env)))
    for i, argv in enumerate(readme_commands()):
        found.append((f"README.md command {i}", argv))
    return found


def readme_commands() -> list[list[str]]:
    """`deltainv ...` commands in deploy/README.md's shell blocks (continuations joined, env prefix dropped)."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                argv = shlex.split(part)
                while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
                    argv = argv[1:]
                if argv and argv[0] in ("deltainv", ".venv/bin/deltainv"):
                    out.append(["deltainv", *argv[1:]])
    return out


def variable_uses() -> list[tuple[str, str | None]]:
    """(name, literal value or None) for every DELTAINV_* in deploy/."""
    uses = []
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.name == "compose.yaml":
            text = compose_defaults(text)
        for m in re.finditer(r"\bDELTAINV_[A-Z0-9_]+\b", text):
            name = m.group(0)
            tail = text[m.end():]
            value = None
            v = re.match(r"""(?:=|:\s+)["'`]?([^\s"'`$,;)]+)""", tail)
            if v:
                value = v.group(1)
            uses.append((name, value))
    return uses


def test_every_place_that_starts_deltainv_was_found():
    where = [w for w, _ in invocations()]
    assert {"vllm.Dockerfile", "sglang.Dockerfile", "compose.yaml:parity", "compose.yaml:candidate",
            "k8s/base:deltainv-server", "k8s/sglang:deltainv-server", "k8s/gate:deltainv-parity",
            "k8s/gate:deltainv-server-baseline", "argo/analysis-template.yaml"} <= set(where), where
    assert any(w.startswith("README.md") for w in where)


@pytest.mark.parametrize("where,argv", invocations(), ids=lambda x: x if isinstance(x, str) else "")
def test_deltainv_invocation_uses_only_accepted_options(where, argv):
    assert check_invocation(argv) == [], where


def test_every_deltainv_variable_in_deploy_is_in_the_plugin_table():
    uses = variable_uses()
    names = {n for n, _ in uses}
    assert {"DELTAINV_METHOD", "DELTAINV_PRECISION"} <= names
    assert check_variables(uses) == []


def test_the_checks_fail_on_drift():
    """A flag or variable that the CLI or plugin does not accept is reported."""
    assert any("--tri-methd" in p for p in check_invocation(["deltainv", "serve", "--tri-methd", "mxr"]))
    assert any("rejects" in p for p in check_invocation(["deltainv", "serve", "--tri-precision", "fp8"]))
    assert any("rejects" in p for p in check_invocation(
        ["deltainv", "parity", "--model", "m", "--margin", "one"]))
    assert check_invocation(["deltainv", "serve", "--engine", "vllm", "--", "--not-ours", "1"]) == []
    assert check_variables([("DELTAINV_METHDO", "mxr_refine")])
    assert check_variables([("DELTAINV_PRECISION", "fp8")])
    assert check_variables([("DELTAINV_METHOD", "no_such_method")])
    assert check_variables([("DELTAINV_METHOD", "mxr_refine"), ("DELTAINV_PRECISION", "fp32")]) == []


def test_every_path_the_readme_commands_name_exists():
    """Copy-paste: `-f deploy/...`, `-k deploy/...` and scripts in the README's shell blocks exist."""
    blocks = "\n".join(re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), flags=re.S))
    paths = set(re.findall(r"(?<![\w/])(deploy/[\w./-]+)", blocks))
    assert {"deploy/compose.yaml", "deploy/docker/vllm.Dockerfile", "deploy/k8s/base",
            "deploy/k8s/gate/run-gate.sh", "deploy/k8s/argo/rollout.yaml"} <= paths
    for p in paths:
        assert (DEPLOY.parent / p).exists(), p
