"""Puts this folder on sys.path so the tests can ``import deploy_testing`` (pytest runs with
``--import-mode=importlib``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
