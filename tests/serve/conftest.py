"""Fixtures for the serve tests: one tiny model and one live server (deltainv active) per session."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "plugin"))  # plugin_testing: clean_env, tiny models, venv paths

import serve_testing  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return serve_testing.make_model(tmp_path_factory.mktemp("serve-model") / "tiny-qwen3-next")


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    s = serve_testing.Server(["--engine", "hf", "--model", str(tiny_model), "--tri-method", "mxr_refine"],
                             tmp_path_factory.mktemp("serve-cwd"))
    try:
        yield s.wait_healthy()
    finally:
        s.stop()
