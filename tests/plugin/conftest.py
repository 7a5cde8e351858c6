"""Puts this folder on sys.path so the tests can ``import plugin_testing`` (pytest runs with
``--import-mode=importlib``, where test files cannot import each other or conftest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
