"""The status page in a real headless browser (Debian's Chromium, driven by Playwright): it
loads, asks for the admin secret, shows an open breaker during a scripted outage with its
cooldown counting down, and its reset button closes it. The secret never reaches a URL or
Envoy's log."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from envoy_config import Provider, start_gateway
from mock_provider import openai_error

ROOT = Path(__file__).resolve().parents[2]
CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
HEALTH = "/llm-failover/health"
SECRET = "status-page-admin-secret-0123"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# What works as root on a closed network (docs/development.md).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = os.environ.get("STATUS_PAGE_SCREENSHOT")   # e.g. docs/images/status-page.png


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_the_status_page_shows_an_open_breaker_and_resets_it(tmp_path, mock, browser):
    a, b = mock("a"), mock("b")
    envoy = start_gateway(
        tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "5m", "failureMax": "5m"}), Provider("b", b.port)],
        extra_env={"LLM_ADMIN_SECRET": SECRET}, router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})
    a.set_default(openai_error(503))
    assert envoy.post_json(CHAT_PATH, CHAT).headers["x-llm-provider"] == "b"   # a: gpt-4o open

    page = browser.new_page(viewport={"width": 1280, "height": 420})
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    url = f"http://127.0.0.1:{envoy.listener_ports[0]}{HEALTH}/status"
    answer = page.goto(url)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    expect(page.locator("#providers")).to_be_hidden()   # no data before the secret

    page.fill("#secret", "wrong-secret")
    page.click("#login button")
    expect(page.locator("#error")).to_have_text("wrong admin secret")

    page.fill("#secret", SECRET)
    page.click("#login button")
    model_row = page.locator('tr.model[data-name="gpt-4o"]')
    expect(model_row.locator(".state")).to_have_text("open")
    expect(model_row).to_contain_text("server_error")
    expect(model_row).to_contain_text("503")
    expect(page.locator('tr.provider[data-name="b"] .state')).to_have_text("closed")
    first = int(re.match(r"(\d+) s", model_row.locator(".cooldown").inner_text()).group(1))
    assert 290 <= first <= 300
    # It counts down by itself, between two reads of the report.
    expect(model_row.locator(".cooldown")).not_to_have_text(f"{first} s", timeout=5000)
    if SCREENSHOT:
        page.screenshot(path=str(ROOT / SCREENSHOT), full_page=True)

    a.set_default({"echo": True})
    page.click('button[data-reset="a"]')
    expect(page.locator('tr.model[data-name="gpt-4o"]')).to_have_count(0)
    expect(page.locator('tr.provider[data-name="a"] .state')).to_have_text("closed")
    assert envoy.post_json(CHAT_PATH, CHAT).headers["x-llm-provider"] == "a"

    assert requested and all(SECRET not in u for u in requested), requested
    envoy.wait_for_log(r"health of a reset by an operator")
    assert SECRET not in envoy.log()


def test_the_status_page_holds_no_data_and_the_report_still_needs_the_secret(tmp_path, mock):
    a = mock("a")
    envoy = start_gateway(tmp_path, [Provider("a", a.port)], extra_env={"LLM_ADMIN_SECRET": SECRET},
                          router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})
    page = envoy.get(f"{HEALTH}/status")
    assert page.status == 200
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '"a"' not in page.text() and "provider.test" not in page.text()
    assert envoy.get(HEALTH).status == 401
    assert envoy.post_raw(f"{HEALTH}/status", b"").status == 401   # only GET of the page is open
    assert envoy.post_raw(f"{HEALTH}/status", b"", headers={"x-llm-failover-admin-secret": SECRET}).status == 405
