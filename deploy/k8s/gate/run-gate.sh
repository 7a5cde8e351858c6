#!/usr/bin/env bash
# Pre-rollout parity gate for a plain CI pipeline. Run from the repository root after the candidate
# (deploy/k8s/base, or your overlay) has been applied to the namespace kubectl points at:
#
#   deploy/k8s/gate/run-gate.sh            # exit 0: accuracy unchanged, promote; non-zero: do not
#
# It brings up the baseline server (deltainv off), waits for both servers, (re)creates the
# `deltainv parity` Job, waits for its verdict and prints its report. TIMEOUT (default 3h) bounds
# each wait; GATE_DIR (default deploy/k8s/gate) is the kustomization to apply.
set -euo pipefail

GATE_DIR=${GATE_DIR:-deploy/k8s/gate}
TIMEOUT=${TIMEOUT:-3h}
KUBECTL=${KUBECTL:-kubectl}

"$KUBECTL" apply -k "$GATE_DIR/baseline"
"$KUBECTL" rollout status deployment/deltainv-server --timeout="$TIMEOUT"
"$KUBECTL" rollout status deployment/deltainv-server-baseline --timeout="$TIMEOUT"

"$KUBECTL" delete job deltainv-parity --ignore-not-found --wait=true
"$KUBECTL" apply -k "$GATE_DIR"

# A Job ends Complete (exit 0: pass) or Failed (1 fail, 2 inconclusive, 3 runs kept failing).
deadline=$(( $(date +%s) + $(sed -e 's/h$/*3600/' -e 's/m$/*60/' -e 's/s$//' <<<"$TIMEOUT") ))
verdict=""
while [ -z "$verdict" ]; do
    verdict=$("$KUBECTL" get job deltainv-parity \
        -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' | grep -oE 'Complete|Failed' || true)
    if [ -z "$verdict" ]; then
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "deltainv gate: no verdict within $TIMEOUT" >&2
            exit 3
        fi
        sleep 20
    fi
done
"$KUBECTL" logs job/deltainv-parity --tail=200 || true
if [ "$verdict" = "Complete" ]; then
    echo "deltainv gate: parity passed" >&2
    exit 0
fi
echo "deltainv gate: parity FAILED (see the table above): do not promote" >&2
exit 1
