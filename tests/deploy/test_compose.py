"""deploy/compose.yaml: valid against the compose-spec schema, and wired as baseline + candidate + a
one-shot parity service that waits for both."""

import shlex

import yaml
from deploy_testing import DEPLOY, compose_defaults, run, tool

COMPOSE = DEPLOY / "compose.yaml"


def check_schema(path):
    return run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])


def test_compose_file_validates_against_the_compose_spec():
    proc = check_schema(COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_fails_a_broken_compose_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: healthy", 1))
    proc = check_schema(bad)
    assert proc.returncode != 0 and "condition" in proc.stdout + proc.stderr


def services():
    return yaml.safe_load(compose_defaults(COMPOSE.read_text()))["services"]


def test_baseline_is_off_candidate_is_on_and_both_share_one_image_and_cache():
    s = services()
    assert s["baseline"]["environment"]["DELTAINV_METHOD"] == "off"
    assert s["candidate"]["environment"]["DELTAINV_METHOD"] == "mxr_refine"
    assert s["baseline"]["image"] == s["candidate"]["image"] == s["parity"]["image"] == "deltainv-vllm:latest"
    for name in ("baseline", "candidate"):
        assert "model-cache:/models" in s[name]["volumes"]
        assert s[name]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert "/health" in " ".join(s[name]["healthcheck"]["test"])
        # two servers on one GPU: each leaves room for the other
        assert "--gpu-memory-utilization 0.42" in s[name]["command"]


def test_parity_waits_for_both_servers_and_targets_them():
    s = services()
    parity = s["parity"]
    assert parity["depends_on"] == {"baseline": {"condition": "service_healthy"},
                                    "candidate": {"condition": "service_healthy"}}
    assert parity["entrypoint"] == ["deltainv", "parity"] and parity["restart"] == "no"
    argv = shlex.split(parity["command"])
    assert argv[argv.index("--baseline-url") + 1] == "http://baseline:8000/v1/completions"
    assert argv[argv.index("--candidate-url") + 1] == "http://candidate:8000/v1/completions"
    assert argv[argv.index("--model-name") + 1] == shlex.split(s["candidate"]["command"])[1]
