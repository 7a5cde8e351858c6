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


def _tagged(text: str, tag: str) -> str:
    m = re.search(rf"<!-- test: {re.escape(tag)} -->\s*(```[a-z]*\n.*?```)", text, re.S)
    assert m, f"no block tagged {tag}"
    return m.group(1)


def test_engine_sections_are_the_tested_commands_of_docs_plugin():
    """tests/plugin/engines run docs/plugin.md's tagged blocks; the README must show the same ones."""
    readme, docs = (ROOT / "README.md").read_text(), (ROOT / "docs" / "plugin.md").read_text()
    for tag in ("vllm-serve", "sglang-serve"):
        assert _tagged(readme, tag) == _tagged(docs, tag), tag
    # tests/plugin/engines/test_vllm_rwkv7.py runs docs/rwkv7.md's RWKV-7 command
    assert _tagged(readme, "vllm-serve-rwkv7") == _tagged((ROOT / "docs" / "rwkv7.md").read_text(), "vllm-serve-rwkv7")


def test_deploy_section_is_the_checked_one_in_deploy_readme():
    """tests/deploy check deploy/README.md's commands against the CLI; the README carries the same section."""
    readme, deploy = (ROOT / "README.md").read_text(), (ROOT / "deploy" / "README.md").read_text()
    section = deploy[deploy.index("## Deploy"):deploy.index("\n---\n")].strip()
    assert section in readme
