"""The dashboard in a real browser: headless Chromium from Debian's packages, driven by selenium
through Debian's chromedriver, against a real hub on 127.0.0.1.

It loads the page as a person does (the key typed into the form), sees a slot's live screen and
its update, keeps a screenshot as a test artifact ($TEST_ARTIFACTS, default <repo>/test-artifacts/),
and checks that a viewer's key shows no screen; and it sees what a task cost, fed through the hub's
OTLP endpoint, and the claims stop when the fleet's budget is spent. Nothing is downloaded: the
driver is given Debian's chromedriver and Chromium, so selenium's own driver manager never runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.conftest import REPO, require_tool
from tests.hubproc import HubProcess, running_hub, write_config
from tests.test_dashboard import export

ADMIN, AGENT, VIEWER = "admin-key-for-the-browser", "agent-key-for-the-browser", "viewer-key-for-the-browser"
WAIT = 10.0  # seconds: the bound of every wait on the page
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def artifacts() -> Path:
    directory = Path(os.environ.get("TEST_ARTIFACTS") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium, chromedriver = require_tool("chromium"), require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    keys = [("owner", "admin", ADMIN), ("agent", "agent", AGENT), ("viewer", "viewer", VIEWER)]
    with running_hub(write_config(tmp_path, keys=keys)) as running:
        yield running


def log_in(driver: WebDriver, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "key")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def screen_text(driver: WebDriver) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, "#team pre.screen").text)


def test_the_dashboard_shows_a_live_screen_to_an_admin_and_none_to_a_viewer(
    browser: WebDriver, hub: HubProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with hub.client(AGENT) as rest:
        session = "browser-session-w1"
        assert rest.post("/v1/workers", json={"session_id": session, "role": "backend"}).status_code == 201
        slot = {"role": "backend", "state": "running", "session_id": session, "mode": "headless"}
        assert rest.put("/v1/team/slots/w1", json=slot).status_code == 200
        first = "$ pytest -q\nfirst screen of w1 <b>not bold</b>"
        assert rest.put("/v1/team/slots/w1/screen", json={"text": first}).status_code == 200

        browser.get(hub.url + "/")
        log_in(browser, ADMIN)
        WebDriverWait(browser, WAIT).until(lambda d: "first screen of w1" in screen_text(d))
        assert screen_text(browser) == first  # shown as text: the markup is not rendered
        row = browser.find_element(By.CSS_SELECTOR, "#team tr").text
        assert row.split()[:4] == ["w1", "local", "backend", "running"]

        second = "$ pytest -q\n12 passed in 0.4s\nsecond screen of w1"
        assert rest.put("/v1/team/slots/w1/screen", json={"text": second}).status_code == 200
        sent = time.monotonic()
        WebDriverWait(browser, WAIT).until(lambda d: "second screen of w1" in screen_text(d))
        took = time.monotonic() - sent
        assert took < 5.0, f"the screen took {took:.1f} s to update"
        shot = artifacts() / "dashboard-team.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        console: list[dict[str, str]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
        refusals = [entry["message"] for entry in console if "Content Security Policy" in entry["message"]]
        assert not refusals, refusals  # the page's own script and styles are all it loads

    browser.find_element(By.ID, "forget").click()  # forgets the admin key and reloads
    WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.ID, "board").get_attribute("hidden") is not None
    )
    log_in(browser, VIEWER)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "screens").text)
    assert browser.find_element(By.ID, "screens").text == (
        "Screens are hidden: this needs the admin role; key 'viewer' is viewer"
    )
    assert browser.find_element(By.CSS_SELECTOR, "#team tr").text.split()[0] == "w1"
    assert "screen of w1" not in browser.page_source
    assert not browser.find_element(By.CSS_SELECTOR, "#team pre.screen").is_displayed()


def test_the_dashboard_shows_what_a_task_cost_and_when_the_budget_stops_the_claims(
    browser: WebDriver, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    keys = [("agent", "agent", AGENT), ("viewer", "viewer", VIEWER)]
    config = write_config(tmp_path, keys=keys)
    with config.open("a", encoding="utf-8") as toml:
        toml.write("[budget]\nfleet_day_usd = 0.5\ntask_usd = 1.0\n")

    def text(driver: WebDriver, element: str) -> str:
        return str(driver.find_element(By.ID, element).text)

    with running_hub(config) as hub, hub.client(AGENT) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "spend-w1", "role": "backend"}).json()
        task = rest.post("/v1/tasks", json={"title": "Price the login form", "instructions": "x"}).json()
        assert rest.post("/v1/tasks/claim", json={"worker_id": worker["id"]}).json()["id"] == task["id"]
        export(hub, AGENT, "spend-w1", [(1000, 200, 5000, 300, 123400), (10, 20, 0, 0, 600)])
        export(hub, AGENT, "spend-coordinator", [(400, 100, 0, 0, 50000)])

        browser.get(hub.url + "/")
        log_in(browser, VIEWER)
        WebDriverWait(browser, WAIT).until(lambda d: "$0.1240" in text(d, "spend-tasks"))
        row = browser.find_element(By.CSS_SELECTOR, "#spend-tasks tr").text
        assert row == f"{task['id']} claimed {worker['id']} 2 6,530 $0.1240 Price the login form"
        assert text(browser, "spend-today").startswith("Today (UTC): $0.1740 in 3 requests, 7,030 tokens")
        assert text(browser, "budget") == "Claims open"
        assert text(browser, "budgets") == (
            "Budgets: fleet per day $0.5000 (35% today), task $1.00, a task over its budget: warn"
        )

        export(hub, AGENT, "spend-coordinator", [(400, 100, 0, 0, 400000)], first=2)  # $0.574 of $0.50
        WebDriverWait(browser, WAIT).until(lambda d: text(d, "budget").startswith("Claims stopped: "))
        budget = browser.find_element(By.ID, "budget")
        assert budget.get_attribute("class") == "budget-stopped"
        assert budget.text.startswith("Claims stopped: the fleet's budget for ")
        assert "is spent: $0.57 of $0.50" in budget.text
        assert text(browser, "budgets").startswith("Budgets: fleet per day $0.5000 (115% today)")
        assert text(browser, "spend-today").startswith("Today (UTC): $0.5740 in 4 requests, 7,530 tokens")
        assert "All time: $0.5740" in text(browser, "spend-total")
        shot = artifacts() / "dashboard-spend.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        assert AGENT not in browser.page_source and VIEWER not in browser.page_source
        other = rest.post("/v1/workers", json={"session_id": "spend-w2", "role": "backend"}).json()
        refused = rest.post("/v1/tasks/claim", json={"worker_id": other["id"]})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "budget_exhausted"
