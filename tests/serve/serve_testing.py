"""Helpers for the ``deltainv serve`` tests: a tiny chat-capable model and live servers.

Imported as ``serve_testing`` (this folder's conftest puts it on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import plugin_testing

DELTAINV = str(Path(sys.executable).with_name("deltainv"))
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def make_model(path: Path) -> Path:
    """The plugin tests' tiny random Qwen3-Next, plus a chat template."""
    sys.path.insert(0, str(plugin_testing.SCRIPTS))
    import tiny_models

    tiny_models.save("qwen3_next", path)
    config = path / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = CHAT_TEMPLATE
    config.write_text(json.dumps(data, indent=1))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(probe, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Call ``probe`` until it stops raising; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise AssertionError(f"server not up after {timeout} s:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)


class Server:
    """``deltainv serve`` in a subprocess (temporary cwd, the environment a user would have)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, python_cli: str = DELTAINV):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        cmd = [python_cli, "serve", "--port", str(self.port), *args]
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env or plugin_testing.clean_env(), stdout=self._logf,
                                     stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 180) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.3)
        raise TimeoutError(f"not healthy after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._logf.closed:
            self._logf.flush()
        return self.log.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode
