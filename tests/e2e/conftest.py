"""Fixtures for the end-to-end tests: mock providers and Envoy bookkeeping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
from envoy_config import envoy_version, reads_error_answers  # noqa: E402
from mock_provider import MockProvider  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "core: the end-to-end suite every supported Envoy runs (make e2e-versions)")
    config.addinivalue_line("markers", "reads_error_answers: needs `errorAnswers: read`, which Envoy 1.36 cannot run")


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("reads_error_answers") for item in items) and not reads_error_answers():
        skip = pytest.mark.skip(reason="Envoy %d.%d runs `errorAnswers: pass` (docs/compatibility.md)" % envoy_version())
        for item in items:
            if item.get_closest_marker("reads_error_answers"):
                item.add_marker(skip)

_first_envoy_of_test = pytest.StashKey[int]()


@pytest.fixture
def mock():
    """Factory: mock("openai") -> a started MockProvider, stopped at teardown."""
    providers: list[MockProvider] = []

    def make(name: str, port: int = 0) -> MockProvider:
        provider = MockProvider(name, port).start()
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.stop()


@pytest.fixture(autouse=True)
def _stop_envoys_of_test(request):
    """Stops every Envoy the test itself started, whatever happened."""
    first = len(harness.started_envoys)
    request.node.stash[_first_envoy_of_test] = first
    yield
    for envoy in harness.started_envoys[first:]:
        envoy.stop()


def _envoys_for(item) -> list[harness.Envoy]:
    """Envoys started during the test, plus shared ones still running (e.g. module fixtures)."""
    first = item.stash.get(_first_envoy_of_test, len(harness.started_envoys))
    own = harness.started_envoys[first:]
    shared = [e for e in harness.started_envoys[:first] if e.running]
    return shared + own


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for envoy in _envoys_for(item):
        report.sections.append((f"{envoy.log_path} (last {harness.LOG_TAIL_LINES} lines)",
                                harness.tail(envoy.log()) or "(empty)"))
        console = (harness.read_text(envoy.stdout_path) + harness.read_text(envoy.stderr_path)).strip()
        if console:
            report.sections.append((f"{envoy.stderr_path.name} and stdout", harness.tail(console)))


def pytest_sessionfinish(session, exitstatus):
    harness.stop_all_envoys()
