"""Every Envoy config we ship passes `envoy --mode validate`, and the demo works as printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from envoy_config import RENDER, envoy_version, reads_error_answers

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "envoy").glob("*.yaml"))


def test_there_are_configs_to_check():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "real-providers.yaml"}


def _fake_keys(monkeypatch):
    # Validation runs the plugin's own config check too, so the keys the real-providers
    # example reads from the environment must be there (fake ones).
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(name, "sk-validate-only")
    monkeypatch.setenv("LLM_FAILOVER_ADMIN_SECRET", "validate-only-admin-secret")


@pytest.mark.core
def test_real_providers_rendered_for_this_envoy_validate(tmp_path, monkeypatch):
    """What an operator on this Envoy runs: real-providers.json rendered for its version (on 1.36
    with `errorAnswers: pass`, which the render and the filter refuse to leave out there)."""
    source = json.loads((ROOT / "envoy/real-providers.json").read_text())
    source["envoy"]["version"] = "%d.%d" % envoy_version()
    refused = subprocess.run([str(RENDER), "-"], input=json.dumps(source), capture_output=True, text=True)
    if not reads_error_answers():
        assert refused.returncode == 1 and "`filter.errorAnswers`" in refused.stderr and "Envoy 1.37" in refused.stderr
        source["filter"]["errorAnswers"] = "pass"
    rendered = subprocess.run([str(RENDER), "-"], input=json.dumps(source), capture_output=True, text=True, check=True)
    config = tmp_path / "real-providers.yaml"
    config.write_text(rendered.stdout)
    _fake_keys(monkeypatch)
    monkeypatch.chdir(ROOT)
    ok, output = harness.Envoy.validate(config)
    assert ok, harness.tail(output)
    assert "llm-failover: plugin configuration refused" not in output
    assert rendered.stdout.count("name: llm_failover~") == 83


@pytest.mark.skipif(not reads_error_answers(), reason="rendered for Envoy 1.37 and later")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_validates(config, monkeypatch):
    _fake_keys(monkeypatch)
    monkeypatch.chdir(ROOT)
    ok, output = harness.Envoy.validate(config)
    assert ok, harness.tail(output)
    assert "llm-failover: plugin configuration refused" not in output


def test_demo_answers_as_the_readme_says():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--smoke"], cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failover, skip, tagged metrics, the health report and the Ollama translation seen" in result.stdout


@pytest.mark.skipif(not reads_error_answers(), reason="the compose file runs Envoy 1.40")
def test_docker_compose_runs_a_config_envoy_accepts(tmp_path):
    """No Docker engine here: check the file, its mounts, and the exact config its Envoy runs."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    envoy = compose["services"]["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")
    for volume in envoy["volumes"] + compose["services"]["mocks"]["volumes"]:
        source = volume.split(":")[0]
        assert (ROOT / source).exists(), f"{source} is mounted but missing"
    [script] = envoy["command"]
    # Compose turns `$$` into `$` before the shell sees it.
    rewrite = script.split(" envoy/demo.yaml")[0].replace("$$", "$")
    rendered = subprocess.run(["/bin/sh", "-c", f"{rewrite} envoy/demo.yaml"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    assert rendered.count("address: 0.0.0.0") == 2
    config = tmp_path / "compose-demo.yaml"
    config.write_text(rendered)
    ok, output = _validate_in(ROOT, config)  # the wasm path is relative to the repo root
    assert ok, harness.tail(output)


def _validate_in(cwd: Path, config: Path) -> tuple[bool, str]:
    result = subprocess.run([harness.ENVOY_BINARY, "--mode", "validate", "-c", str(config), "--base-id", "40999"],
                            cwd=cwd, capture_output=True, text=True, timeout=60)
    return result.returncode == 0, result.stdout + result.stderr
