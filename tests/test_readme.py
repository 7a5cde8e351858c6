"""The README's two commands are the ones the project actually runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_block():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands():
    assert len(_first_block()) == 2


def test_ci_runs_the_readme_test_command():
    test_cmd = _first_block()[1]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [test_cmd]
