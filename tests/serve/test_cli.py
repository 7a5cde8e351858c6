"""``deltainv serve`` checks every setting before it starts anything: one line naming the bad
variable or flag, exit status 2, no traceback, nothing listening."""

from __future__ import annotations

import os
import subprocess

import plugin_testing
import pytest
import serve_testing

CASES = [
    # (id, args, env, what the one line names)
    ("unknown method flag", ["--tri-method", "nope"], {}, "--tri-method='nope' is not valid"),
    ("unknown method variable", [], {"DELTAINV_METHOD": "nope"}, "DELTAINV_METHOD='nope' is not valid"),
    ("precision the method refuses", ["--tri-method", "mxr_refine"], {"DELTAINV_PRECISION": "fp64"},
     "DELTAINV_PRECISION='fp64'"),
    ("iterations that cannot converge", ["--tri-method", "newton_schulz"], {"DELTAINV_OPTIONS": "iters=3"},
     "iters=3 does not converge"),
    ("iterations out of range", ["--tri-method", "newton_schulz"], {"DELTAINV_OPTIONS": "iters=1000"},
     "it takes an integer in [1, 64]"),
    ("option of another method", ["--tri-method", "mxr"], {"DELTAINV_OPTIONS": "iters=12"},
     "got unknown option(s) ['iters']"),
    ("option value not a precision", ["--tri-method", "mxr_refine"], {"DELTAINV_OPTIONS": "refine_precision=fp8"},
     "refine_precision='fp8'"),
    ("boolean variable", [], {"DELTAINV_GUARD": "maybe"}, "DELTAINV_GUARD='maybe' is not valid"),
    ("backend", [], {"DELTAINV_BACKEND": "cuda"}, "DELTAINV_BACKEND='cuda' is not valid"),
    ("targets", [], {"DELTAINV_TARGETS": "fla,tensorrt"}, "unknown target group(s) ['tensorrt']"),
    ("empty api key flag", ["--api-key", ""], {}, "--api-key must not be empty"),
    ("zero queue", ["--max-queue", "0"], {}, "--max-queue: must be a finite number > 0"),
    ("negative timeout", ["--header-timeout", "-1"], {}, "--header-timeout: must be a finite number > 0"),
    ("nan drain timeout", ["--drain-timeout", "nan"], {}, "--drain-timeout: must be a finite number > 0"),
    ("port out of range", ["--port", "70000"], {}, "--port: must be an integer in [0, 65535]"),
    ("hosts flag with vllm", ["--engine", "vllm", "--allowed-hosts", "a"], {}, "--allowed-hosts applies to"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_setting_stops_serve_with_one_line(case, monkeypatch, capsys):
    """In-process through the real command line (``deltainv.cli.main``), so 16 cases cost no start-ups."""
    from deltainv.cli import main

    _, args, env, named = case
    for k in [k for k in os.environ if k.startswith("DELTAINV_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        code = main(["serve", "--engine", "hf", *args])
    except SystemExit as e:  # argparse's own one-line error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if named in line]) == 1, err
    assert "listening" not in err


def test_the_command_prints_one_line_and_no_traceback(tmp_path):
    """The same as a user sees it: a process, its exit status and its stderr (with a typo'd variable)."""
    done = subprocess.run([serve_testing.DELTAINV, "serve", "--tri-method", "nope"], cwd=tmp_path,
                          env=plugin_testing.clean_env(DELTAINV_METOD="mxr"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0] == "deltainv serve: warning: DELTAINV_METOD is set but nothing reads it (a typo?)"
    assert lines[1].startswith("deltainv serve: --tri-method='nope' is not valid; choose one of: off, ")
