"""deploy/k8s/gate/run-gate.sh against a stand-in kubectl: it applies the baseline before the Job,
waits for both servers, and exits 0 only when the Job ends Complete."""

import os
import stat

import pytest
from deploy_testing import K8S, ROOT, run

FAKE = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = get ]; then echo -n "$JOB_CONDITIONS"; fi
if [ "$1" = logs ]; then echo "task  verdict"; fi
exit 0
"""


@pytest.mark.parametrize("conditions,code", [("SuccessCriteriaMet Complete ", 0), ("FailureTarget Failed ", 1)])
def test_gate_script_exit_code_follows_the_job(tmp_path, conditions, code):
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {**os.environ, "KUBECTL": str(kubectl), "CALLS": str(calls), "JOB_CONDITIONS": conditions, "TIMEOUT": "1m"}
    proc = run(["bash", str(K8S / "gate" / "run-gate.sh")], env=env, cwd=ROOT)
    assert proc.returncode == code, proc.stderr
    lines = calls.read_text().splitlines()
    assert lines[:5] == [
        "apply -k deploy/k8s/gate/baseline",
        "rollout status deployment/deltainv-server --timeout=1m",
        "rollout status deployment/deltainv-server-baseline --timeout=1m",
        "delete job deltainv-parity --ignore-not-found --wait=true",
        "apply -k deploy/k8s/gate",
    ]
    assert (ROOT / "deploy/k8s/gate/baseline").is_dir()
