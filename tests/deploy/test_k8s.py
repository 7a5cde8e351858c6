"""deploy/k8s: every kustomization renders (kubectl's built-in kustomize) and validates strictly
against the Kubernetes schemas shipped in kubernetes-validate; values reach the fields they drive."""

import copy
import shutil

import pytest
import yaml
from deploy_testing import (K8S, K8S_VERSIONS, configmap_for, expand_k8s, find, k8s_validate, render,
                            render_text)

KUSTOMIZATIONS = ("base", "sglang", "cache", "gate")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates(name, version, tmp_path):
    out = tmp_path / f"{name}.yaml"
    out.write_text(render_text(K8S / name))
    proc = k8s_validate(out, version)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validation_fails_a_misspelt_field(tmp_path):
    out = tmp_path / "bad.yaml"
    out.write_text(render_text(K8S / "base").replace("failureThreshold: 3", "failureTreshold: 3"))
    proc = k8s_validate(out, K8S_VERSIONS[-1])
    assert proc.returncode != 0 and "failureTreshold" in proc.stdout + proc.stderr


def server(resources, name="deltainv-server"):
    dep = find(resources, "Deployment", name)
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def test_server_deployment_gpus_probes_cache_and_flag():
    res = render(K8S / "base")
    dep, c = server(res)
    values = configmap_for(res, c)
    assert values["DELTAINV_METHOD"] == "mxr_refine" and values["DELTAINV_PRECISION"] == "fp32"
    tp = values["TENSOR_PARALLEL_SIZE"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == tp == c["resources"]["requests"]["nvidia.com/gpu"]
    assert expand_k8s(c["args"], values) == ["--model", values["MODEL"], "--", "--tensor-parallel-size", tp]
    port = c["ports"][0]["containerPort"]
    assert port == 8000
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert mounts["model-cache"] == "/models"
    assert vols["model-cache"]["persistentVolumeClaim"]["claimName"] == find(
        render(K8S / "cache"), "PersistentVolumeClaim")["metadata"]["name"]
    assert {e["name"]: e.get("value") for e in c["env"]}["HF_HOME"] == "/models/hf"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    svc = find(res, "Service", "deltainv-server")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_tensor_parallel_size_is_one_value(tmp_path):
    """Changing TENSOR_PARALLEL_SIZE in values.env changes the GPU count and the engine's argument."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    env = tree / "base" / "values.env"
    env.write_text(env.read_text().replace("TENSOR_PARALLEL_SIZE=4", "TENSOR_PARALLEL_SIZE=8"))
    res = render(tree / "base")
    _, c = server(res)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert expand_k8s(c["args"], configmap_for(res, c))[-1] == "8"


def test_sglang_overlay_swaps_only_the_image():
    base, sgl = render(K8S / "base"), render(K8S / "sglang")
    (_, cb), (_, cs) = server(base), server(sgl)
    assert cb["image"] == "deltainv-vllm:0.33.0" and cs["image"] == "deltainv-sglang:0.5.23"
    cs = copy.deepcopy(cs)
    cs["image"] = cb["image"]
    assert cs == cb


def test_gate_baseline_is_off_separate_and_the_job_targets_both_services():
    base, gate = render(K8S / "base"), render(K8S / "gate")
    bdep, bc = server(gate, "deltainv-server-baseline")
    _, cc = server(base)
    assert configmap_for(gate, bc)["DELTAINV_METHOD"] == "off"
    assert bc["image"] == cc["image"]
    # the two Services never select each other's pods
    cand_sel = find(base, "Service", "deltainv-server")["spec"]["selector"]
    base_sel = find(gate, "Service", "deltainv-server-baseline")["spec"]["selector"]
    assert cand_sel["deltainv.io/arm"] == "candidate" and base_sel["deltainv.io/arm"] == "baseline"

    job = find(gate, "Job", "deltainv-parity")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    jc = pod["containers"][0]
    assert jc["image"] == cc["image"] and jc["command"] == ["deltainv", "parity"]
    assert "nvidia.com/gpu" not in jc["resources"].get("limits", {})
    argv = expand_k8s(jc["args"], configmap_for(gate, jc))
    assert argv[argv.index("--baseline-url") + 1] == "http://deltainv-server-baseline:8000/v1/completions"
    assert argv[argv.index("--candidate-url") + 1] == "http://deltainv-server:8000/v1/completions"
    assert argv[argv.index("--model-name") + 1] == configmap_for(base, cc)["MODEL"]
    # exit 1 (regression) and 2 (inconclusive) fail the Job at once; nothing restarts in place
    assert pod["restartPolicy"] == "Never"
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [1, 2]


def test_argo_analysis_template_runs_the_same_job(tmp_path):
    tmpl = yaml.safe_load((K8S / "argo" / "analysis-template.yaml").read_text())
    assert tmpl["apiVersion"] == "argoproj.io/v1alpha1" and tmpl["kind"] == "AnalysisTemplate"
    metric = tmpl["spec"]["metrics"][0]
    job_spec = metric["provider"]["job"]["spec"]
    gate_job = find(render(K8S / "gate"), "Job", "deltainv-parity")
    ac, gc = job_spec["template"]["spec"]["containers"][0], gate_job["spec"]["template"]["spec"]["containers"][0]
    assert ac["command"] == gc["command"] and ac["args"] == gc["args"]
    assert job_spec["podFailurePolicy"] == gate_job["spec"]["podFailurePolicy"]
    declared = {a["name"] for a in tmpl["spec"]["args"]}
    text = yaml.safe_dump(job_spec)
    import re

    used = set(re.findall(r"\{\{args\.([a-z-]+)\}\}", text))
    assert used == declared
    # the embedded Job, with the Rollout's arguments filled in, is a valid batch/v1 Job
    for name in used:
        text = text.replace("{{args.%s}}" % name, "example-" + name)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "deltainv-parity"},
           "spec": yaml.safe_load(text)}
    out = tmp_path / "job.yaml"
    out.write_text(yaml.safe_dump(job))
    for version in K8S_VERSIONS:
        proc = k8s_validate(out, version)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_argo_rollout_adopts_the_deployment_and_runs_the_parity_analysis(tmp_path):
    docs = list(yaml.safe_load_all((K8S / "argo" / "rollout.yaml").read_text()))
    rollout, preview = find(docs, "Rollout", "deltainv-server"), find(docs, "Service", "deltainv-server-preview")
    base = render(K8S / "base")
    dep, c = server(base)
    assert rollout["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": dep["metadata"]["name"], "scaleDown": "onsuccess"}
    assert rollout["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    bg = rollout["spec"]["strategy"]["blueGreen"]
    assert bg["activeService"] == "deltainv-server" and bg["previewService"] == preview["metadata"]["name"]
    assert preview["spec"]["selector"] == find(base, "Service", "deltainv-server")["spec"]["selector"]
    tmpl = yaml.safe_load((K8S / "argo" / "analysis-template.yaml").read_text())
    analysis = bg["prePromotionAnalysis"]
    assert analysis["templates"] == [{"templateName": tmpl["metadata"]["name"]}]
    given = {a["name"]: a["value"] for a in analysis["args"]}
    required = {a["name"] for a in tmpl["spec"]["args"] if "value" not in a}
    assert required <= set(given) <= {a["name"] for a in tmpl["spec"]["args"]}
    assert given["candidate-url"] == "http://deltainv-server-preview:8000/v1/completions"
    assert given["image"] == c["image"] and given["model"] == configmap_for(base, c)["MODEL"]
    out = tmp_path / "preview.yaml"
    out.write_text(yaml.safe_dump(preview))
    assert k8s_validate(out, K8S_VERSIONS[-1]).returncode == 0
