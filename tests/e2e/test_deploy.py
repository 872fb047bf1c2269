"""The Kubernetes and Istio deployments of deploy/: every kustomization renders, passes the
Kubernetes and Istio schemas, carries the Envoy config that is rendered from the JSON beside it,
and that config (pointed at mock providers) fails over in a real Envoy. For Istio, the
EnvoyFilter is applied to an Istio-shaped gateway config (istio_standin.py, which stands in for
istiod) and the result fails over in the Envoy of the matching Istio release."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import harness
import istio_standin
from envoy_config import RENDER, ROOT, WASM, envoy_version, reads_error_answers
from fake_api import anthropic, gemini
from mock_provider import openai_error

DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = ["kubernetes/gateway", "kubernetes/mesh", "istio"]
GATEWAY_SOURCE = DEPLOY / "kubernetes/gateway/llm-failover.json"
ISTIO_SOURCE = DEPLOY / "istio/llm-failover.json"
# The Kubernetes releases the manifests are checked against: the oldest still supported by the
# large managed offerings in late 2026, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
KEYS = {"OPENAI_API_KEY": "sk-openai-k8s", "ANTHROPIC_API_KEY": "sk-ant-k8s", "GEMINI_API_KEY": "gm-k8s",
        "LLM_FAILOVER_ADMIN_SECRET": "admin-secret-k8s"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
ISTIO_KINDS = ("networking.istio.io/", "extensions.istio.io/")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """`kubectl kustomize` of each deployment, after `make deploy-wasm`'s copy of the module."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/"
    shutil.copyfile(WASM, DEPLOY / "kubernetes/wasm/llm_failover.wasm")
    out = {}
    for name in KUSTOMIZATIONS:
        done = subprocess.run([kubectl, "kustomize", str(DEPLOY / name)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        out[name] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return out


def one(docs: list[dict], kind: str, name_prefix: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    return doc


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubernetes_kinds_pass_the_kubernetes_schemas(rendered, name):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    core = [d for d in rendered[name] if not d["apiVersion"].startswith(ISTIO_KINDS)]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Service", "Deployment"}
    for version in KUBERNETES_VERSIONS:
        for doc in core:
            kubernetes_validate.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(one(core, "Deployment", "llm-")))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def validate_istio(docs: list[dict]) -> subprocess.CompletedProcess:
    script = ROOT / "tests/deploy/validate-istio.mjs"
    assert (ROOT / "tests/deploy/node_modules/@kubernetes-models/istio").is_dir(), \
        "Istio's schemas are missing: make setup (npm ci in tests/deploy)"
    return subprocess.run(["node", str(script)], input=json.dumps(docs), capture_output=True, text=True, timeout=60)


def test_istio_kinds_pass_istio_schemas(rendered):
    docs = [d for name in KUSTOMIZATIONS for d in rendered[name] if d["apiVersion"].startswith(ISTIO_KINDS)]
    assert {d["kind"] for d in docs} == {"EnvoyFilter", "Gateway", "VirtualService", "ServiceEntry"}
    done = validate_istio(docs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\nvalid ") + done.stdout.startswith("valid ") == len(docs), done.stdout
    # The same check fails a patch istiod would refuse.
    broken = json.loads(json.dumps(one(docs, "EnvoyFilter", "llm-failover")))
    broken["spec"]["configPatches"][0]["applyTo"] = "UPSTREAM_HTTP_FILTER"
    done = validate_istio([broken])
    assert done.returncode == 1 and "INVALID networking.istio.io/v1alpha3 EnvoyFilter" in done.stdout, done.stdout


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_wasm_configmap_carries_the_built_module_within_a_configmap_limit(rendered, name):
    wasm = one(rendered[name], "ConfigMap", "llm-failover-wasm-")
    carried = base64.b64decode(wasm["binaryData"]["llm_failover.wasm"])
    assert carried == WASM.read_bytes()
    assert len(carried) <= 1024 * 1024, f"{len(carried)} bytes: Kubernetes refuses a ConfigMap over 1 MiB"
    mounts = [p for d in rendered[name] if d["kind"] == "Deployment"
              for p in d["spec"]["template"]["spec"]["volumes"] if p.get("configMap", {}).get("name") == wasm["metadata"]["name"]]
    assert mounts, "no Deployment mounts the module"


def _header_and_body(path: Path) -> tuple[str, str]:
    header, body = path.read_text().split("\n\n", 1)
    return header, body


def test_the_gateway_carries_the_config_rendered_from_its_json(rendered):
    docs = rendered["kubernetes/gateway"]
    carried = one(docs, "ConfigMap", "llm-failover-envoy-")["data"]["envoy.yaml"]
    assert carried == (DEPLOY / "kubernetes/gateway/envoy.yaml").read_text()
    made = subprocess.run([str(RENDER), str(GATEWAY_SOURCE)], capture_output=True, text=True, check=True).stdout
    assert _header_and_body(DEPLOY / "kubernetes/gateway/envoy.yaml")[1] == made
    source = json.loads(GATEWAY_SOURCE.read_text())
    container = one(docs, "Deployment", "llm-failover")["spec"]["template"]["spec"]["containers"][0]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(source["envoy"]["wasm"]).parent) in mounted
    assert container["args"][1] in {f"{m}/envoy.yaml" for m in mounted}
    assert container["image"].endswith("v%s.0" % source["envoy"]["version"])
    # The mesh overlay lets the gateway reach exactly the providers' hosts, and names the Service.
    mesh = rendered["kubernetes/mesh"]
    hosts = {p["host"] for p in source["filter"]["providers"]}
    assert set(one(mesh, "ServiceEntry", "llm-providers")["spec"]["hosts"]) == hosts
    service = one(mesh, "Service", "llm-failover")["metadata"]
    assert one(mesh, "VirtualService", "llm-failover")["spec"]["hosts"] == [f"{service['name']}.{service['namespace']}.svc.cluster.local"]


def test_the_istio_resources_are_rendered_from_their_json_and_agree(rendered):
    docs = rendered["istio"]
    made = subprocess.run([str(RENDER), "--istio", str(ISTIO_SOURCE)], capture_output=True, text=True, check=True).stdout
    assert _header_and_body(DEPLOY / "istio/llm-failover.yaml")[1] == made
    source = json.loads(ISTIO_SOURCE.read_text())["istio"]
    envoy_filter = one(docs, "EnvoyFilter", "llm-failover")
    gateway = one(docs, "Gateway", "llm-egress")
    pod = one(docs, "Deployment", "llm-egress")["spec"]["template"]
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == source["selector"] == gateway["spec"]["selector"]
    assert source["selector"].items() <= pod["metadata"]["labels"].items()
    assert (gateway["metadata"]["namespace"], gateway["metadata"]["name"]) == (source["namespace"], source["gateway"])
    assert pod["metadata"]["annotations"]["sidecar.istio.io/bootstrapOverride"] == one(docs, "ConfigMap", "llm-failover-bootstrap")["metadata"]["name"]


@pytest.mark.core
def test_the_gateway_config_is_checked_by_this_envoy(tmp_path, monkeypatch):
    """Envoy 1.37 and later run the gateway's config as it is; 1.36 refuses it, naming the field
    (it reads error answers, which 1.36 cannot: docs/compatibility.md)."""
    text = (DEPLOY / "kubernetes/gateway/envoy.yaml").read_text()
    source = json.loads(GATEWAY_SOURCE.read_text())
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace(source["envoy"]["wasm"], str(WASM)))
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    ok, output = harness.Envoy.validate(config)
    if reads_error_answers():
        assert ok, harness.tail(output)
        assert "plugin configuration refused" not in output
    else:
        assert not ok
        assert "`errorAnswers`" in output and "Envoy 1.37" in output, harness.tail(output)


def _pointed_at(source: Path, upstreams: dict[str, int], audit_log: Path, **envoy) -> dict:
    """The deployment's render input with the providers at local mocks (plain HTTP), the
    module built here and the audit lines in a file: nothing else changes."""
    render_input = json.loads(source.read_text())
    assert render_input["envoy"]["auditLog"] == "/dev/stdout"
    render_input["envoy"].update(envoy, wasm=str(WASM), auditLog=str(audit_log),
                                 upstreams={n: {"address": f"127.0.0.1:{p}", "tls": False} for n, p in upstreams.items()})
    return render_input


def _render(render_input: dict, *flags: str) -> str:
    done = subprocess.run([str(RENDER), *flags, "-"], input=json.dumps(render_input), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Providers:
    """OpenAI (a mock), Anthropic and Gemini (fakes that check requests like the real APIs)."""

    def __init__(self, mock):
        self.openai = mock("openai")
        self.anthropic = mock("anthropic")
        self.anthropic.set_default(anthropic.responder("anthropic", KEYS["ANTHROPIC_API_KEY"]))
        self.gemini = mock("gemini")
        self.gemini.set_default(gemini.responder("gemini", KEYS["GEMINI_API_KEY"]))

    def ports(self) -> dict[str, int]:
        return {"openai": self.openai.port, "anthropic": self.anthropic.port, "gemini": self.gemini.port}

    def all_requests(self):
        return self.openai.requests + self.anthropic.requests + self.gemini.requests

    def check_failover(self, envoy, audit_log: Path) -> None:
        """The core failover test: OpenAI unavailable, Anthropic serves, translated; each
        provider saw only its own key; a path the gateway does not serve reaches no provider;
        the audit line tells the failover."""
        self.openai.script(openai_error(503))
        answer = envoy.post_json("/v1/chat/completions", CHAT, headers={"authorization": "Bearer sk-client"})
        assert answer.status == 200, answer.text()
        assert answer.headers["x-llm-provider"] == "anthropic"
        assert answer.json()["choices"][0]["message"]["content"] == "hello from anthropic"
        [tried] = self.openai.requests
        assert tried.header("authorization") == f"Bearer {KEYS['OPENAI_API_KEY']}"
        [served] = self.anthropic.requests
        assert anthropic.problems(served, KEYS["ANTHROPIC_API_KEY"]) == []
        assert served.header("authorization") is None
        for request in self.all_requests():
            assert "sk-client" not in json.dumps(request.headers)
        seen = len(self.all_requests())
        other = envoy.get("/v1/files")
        assert other.status == 404 and other.json()["error"]["code"] == "unsupported_path"
        assert len(self.all_requests()) == seen
        deadline = time.monotonic() + 5
        while not audit_log.exists() or not audit_log.read_text().strip():
            assert time.monotonic() < deadline, "no audit line"
            time.sleep(0.05)
        [line] = [json.loads(t) for t in audit_log.read_text().splitlines()]
        assert line["servedBy"] == "anthropic"
        assert [(a["provider"], a["outcome"]) for a in line["attempts"]] == [("openai", "failed"), ("anthropic", "served")]
        assert not any(key in audit_log.read_text() for key in KEYS.values())


@pytest.mark.skipif(not reads_error_answers(), reason="the gateway's Envoy is 1.40; 1.36 refuses its config (above)")
def test_the_gateway_config_fails_over_in_a_real_envoy(tmp_path, mock, monkeypatch):
    providers = Providers(mock)
    listener, admin, ops = harness.free_port(), harness.free_port(), harness.free_port()
    render_input = _pointed_at(GATEWAY_SOURCE, providers.ports(), tmp_path / "audit.log", version="%d.%d" % envoy_version(),
                               listener=f"127.0.0.1:{listener}", admin=f"127.0.0.1:{admin}", ops=f"127.0.0.1:{ops}")
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    envoy = harness.Envoy(_render(render_input), tmp_path, admin_port=admin, listener_ports=[listener, ops]).start()
    providers.check_failover(envoy, tmp_path / "audit.log")

    # What the probes and Prometheus see on the pod network, and nothing else of the admin.
    assert harness.http_request(ops, "GET", "/ready").status == 200
    metrics = harness.http_request(ops, "GET", "/stats/prometheus").text()
    assert 'llm_failover_provider_served{llm_provider="anthropic"} 1' in metrics
    for path in ("/quitquitquit", "/config_dump", "/stats"):
        assert harness.http_request(ops, "POST" if path == "/quitquitquit" else "GET", path).status == 404
    assert envoy.running
    # Readiness fails while Envoy drains, so Kubernetes stops sending it traffic first.
    envoy.admin_post("/healthcheck/fail")
    assert harness.http_request(ops, "GET", "/ready").status == 503


def _istio_gateway(tmp_path, render_input: dict, *, router_placed_by_wasm_plugin: bool = False):
    """The Istio gateway proxy istiod would configure from deploy/istio (istio_standin.py)."""
    docs = [d for d in yaml.safe_load_all(_render(render_input, "--istio")) if d]
    envoy_filter = one(docs, "EnvoyFilter", "llm-failover")
    override = json.loads(one(docs, "ConfigMap", "llm-failover-bootstrap")["data"]["custom_bootstrap.json"])
    manifests = [d for d in yaml.safe_load_all((DEPLOY / "istio/gateway.yaml").read_text()) if d]
    pod = yaml.safe_load((DEPLOY / "istio/deployment.yaml").read_text())["spec"]["template"]
    stats = yaml.safe_load(pod["metadata"]["annotations"]["proxy.istio.io/config"])["proxyStatsMatcher"]
    listener, admin, prometheus = harness.free_port(), harness.free_port(), harness.free_port()
    bootstrap = istio_standin.gateway_bootstrap(
        listener_port=listener, admin_port=admin, prometheus_port=prometheus,
        virtual_service=one(manifests, "VirtualService", "llm-egress"),
        service_entry_hosts=[p["host"] for p in render_input["filter"]["providers"]],
        stats_inclusion_regexps=stats["inclusionRegexps"])
    istio_standin.merge_bootstrap_override(bootstrap, override)
    istio = render_input["istio"]
    applied = istio_standin.apply_envoy_filter(bootstrap, envoy_filter, workload_labels=pod["metadata"]["labels"],
                                               gateway=f"{istio['namespace']}/{istio['gateway']}")
    assert len(applied) == len(envoy_filter["spec"]["configPatches"]) and min(applied) >= 1, \
        f"every patch must find its place: {applied}"
    if router_placed_by_wasm_plugin:
        filters = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        [index] = [i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.wasm"]
        filters[index] = istio_standin.wasm_plugin_filter(filters[index])
    envoy = harness.Envoy(istio_standin.dumps(bootstrap), tmp_path, admin_port=admin, listener_ports=[listener]).start()
    return envoy, prometheus


@pytest.mark.core
def test_the_istio_envoyfilter_fails_over_in_an_istio_shaped_gateway(tmp_path, mock, monkeypatch):
    """Istio 1.28 runs Envoy 1.36, 1.32 runs 1.40: the core suite runs this on each."""
    providers = Providers(mock)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    envoy, prometheus = _istio_gateway(tmp_path, _pointed_at(ISTIO_SOURCE, providers.ports(), tmp_path / "audit.log"))
    providers.check_failover(envoy, tmp_path / "audit.log")
    # Istio's stats matcher keeps the filter's metrics (the annotation's regex), and the
    # bootstrap override's tags name them as on our own gateway.
    metrics = harness.http_request(prometheus, "GET", "/stats/prometheus").text()
    # On 1.36-1.38 the metrics also carry `llm_failover_vm` (docs/compatibility.md).
    assert re.search(r'^llm_failover_provider_served\{(llm_failover_vm="[^"]+",)?llm_provider="anthropic"\} 1$', metrics, re.M), metrics
    assert "envoy_cluster_upstream_rq_total" not in metrics, "Istio's matcher leaves other cluster stats out"


@pytest.mark.core
def test_a_router_role_placed_by_a_wasm_plugin_never_reaches_a_provider(tmp_path, mock, monkeypatch):
    """Why deploy/istio has no WasmPlugin: without `allow_on_headers_stop_iteration` (no
    WasmPlugin field sets it) the router role's pause for the body holds the request forever."""
    providers = Providers(mock)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    envoy, _ = _istio_gateway(tmp_path, _pointed_at(ISTIO_SOURCE, providers.ports(), tmp_path / "audit.log"),
                              router_placed_by_wasm_plugin=True)
    with pytest.raises(TimeoutError):
        envoy.post_json("/v1/chat/completions", CHAT, timeout=3)
    assert providers.all_requests() == []
    # The same gateway with the EnvoyFilter's placement answers (the test above).
