"""The images: hadolint passes them (and fails a broken one), and they pin, drop root, health-check
and start `deltainv serve` for their engine."""

import re
import tomllib

import pytest
from deploy_testing import DOCKERFILES, ROOT, dockerfile_instructions, exec_form, run, tool

#: engine -> (official image, build-arg holding its tag, distribution in pyproject's extra)
OFFICIAL = {"vllm": ("vllm/vllm-openai", "VLLM_VERSION", "vllm"), "sglang": ("lmsysorg/sglang", "SGLANG_VERSION", "sglang")}


def hadolint(path):
    return run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)])


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(engine):
    proc = hadolint(DOCKERFILES[engine])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_a_dockerfile_with_a_finding(tmp_path):
    """The linter is live: our own Dockerfile plus an unpinned, cache-keeping apt install fails."""
    bad = tmp_path / "Dockerfile"
    text = DOCKERFILES["vllm"].read_text().replace(
        "USER ${APP_UID}", "USER root\nRUN apt-get update && apt-get install -y curl\nUSER ${APP_UID}")
    bad.write_text(text)
    proc = hadolint(bad)
    assert proc.returncode != 0
    assert "DL3008" in proc.stdout  # pin versions in apt-get install


def _args(instructions) -> dict[str, str]:
    out = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out.setdefault(name, value)
    return out


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_image_extends_the_official_image_at_a_supported_pinned_version(engine):
    image, arg, dist = OFFICIAL[engine]
    instr = dockerfile_instructions(DOCKERFILES[engine])
    froms = [rest for word, rest in instr if word == "FROM"]
    assert froms == [f"{image}:${{{arg}}}"], froms
    version = _args(instr)[arg].lstrip("v")
    from packaging.specifiers import SpecifierSet

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = SpecifierSet(next(r for r in extras[dist] if r.startswith(dist)).removeprefix(dist))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version) and version in spec, (version, spec)


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_image_runs_deltainv_serve_as_non_root_with_a_healthcheck(engine):
    instr = dockerfile_instructions(DOCKERFILES[engine])
    entry = exec_form(next(rest for w, rest in instr if w == "ENTRYPOINT"))
    assert entry[:4] == ["deltainv", "serve", "--engine", engine]
    port = entry[entry.index("--port") + 1]
    assert [rest for w, rest in instr if w == "EXPOSE"] == [port]
    health = next(rest for w, rest in instr if w == "HEALTHCHECK")
    assert f"127.0.0.1:{port}/health" in health
    # the last USER is the unprivileged uid the image creates (and owns /models)
    user = [rest for w, rest in instr if w == "USER"][-1]
    assert user == "${APP_UID}" and int(_args(instr)["APP_UID"]) >= 1000
    run_ = " ".join(rest for w, rest in instr if w == "RUN")
    assert "useradd --uid \"${APP_UID}\"" in run_ and "chown \"${APP_UID}\" /models" in run_
    # deltainv goes in against the engine's own frozen packages, and its entry point is verified
    assert "pip list --format=freeze > /tmp/engine-constraints.txt" in run_
    assert "-c /tmp/engine-constraints.txt" in run_
    group = {"vllm": "vllm.general_plugins", "sglang": "sglang.srt.plugins"}[engine]
    assert f"entry_points(group='{group}')" in run_
    env = " ".join(rest for w, rest in instr if w == "ENV")
    assert "DELTAINV_METHOD=${DELTAINV_METHOD}" in env and "PYTHONSAFEPATH=1" in env


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_dockerignore_sends_exactly_what_the_image_copies(engine):
    """The context is the repository root: everything is ignored (the multi-GB .venv* folders too)
    except the sources the Dockerfile COPYs, and each of those exists."""
    lines = [ln for ln in DOCKERFILES[engine].with_name(DOCKERFILES[engine].name + ".dockerignore").read_text()
             .splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = {p.rstrip("/") for w, rest in dockerfile_instructions(DOCKERFILES[engine]) if w == "COPY"
               for p in rest.split()[:-1]}
    assert sources == allowed
    for src in sources:
        assert (ROOT / src).exists(), src
