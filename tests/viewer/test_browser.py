"""The viewer in a real browser: Debian's Chromium, driven by Selenium through Debian's
chromedriver (nothing is downloaded), against ``convstore DB serve`` on a SQLite file
and on PostgreSQL.

One walk per backend, as a person would: the sessions page, a conversation, another
branch, the raw JSON of an item, the time-travel slider, the branch tree, usage, the
log, and a message that another process adds appearing live; every page without a
console error (a script or style the page's Content-Security-Policy blocked would be
one). With ``CONVSTORE_VIEWER_SCREENSHOTS=DIR`` each page is saved to DIR as a PNG
(docs/images/ holds the ones docs/viewer.md shows).

Skipped (failed under CI) when /usr/bin/chromium or /usr/bin/chromedriver is missing:
``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import IN_CI, reset_server_database, server_url
from .conftest import demo
from .test_serve import serving

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0  # seconds an element may take to appear (a hang guard, not a measure)
SCREENSHOTS = os.environ.get("CONVSTORE_VIEWER_SCREENSHOTS")

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = f"no {', '.join(missing)}: apt-get install chromium chromium-driver"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    profile = tempfile.mkdtemp(prefix="convstore-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # (as root)
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shoot(driver: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(max(int(height) + 40, 600), 1600))
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
        driver.set_window_size(1280, 900)


def wait_for(driver: Any, by: str, what: str) -> Any:
    return WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((by, what)))


def add_message(target: str, text: str) -> None:
    """Another process adds a message to the 'notes' session."""
    code = (
        "import asyncio, sys\n"
        "from sessions import SQLAlchemySession, SQLiteSession\n"
        "async def main(target, text):\n"
        "    s = (SQLAlchemySession.from_url('notes', url=target) if '://' in target\n"
        "         else SQLiteSession('notes', target))\n"
        "    async with s:\n"
        "        await s.add_items([{'role': 'user', 'content': text}])\n"
        "asyncio.run(main(*sys.argv[1:]))\n"
    )
    subprocess.run([sys.executable, "-c", code, target, text], cwd=ROOT, check=True, timeout=WAIT)


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, demo_db: Path) -> str:
    if request.param == "sqlite-file":
        return str(demo_db)
    url = server_url("postgres")
    asyncio.run(reset_server_database(url))
    asyncio.run(demo.build(url))
    return url


def test_a_walk_through_the_viewer(browser: Any, database: str) -> None:
    driver = browser
    driver.get_log("browser")  # (what earlier tests left)
    with serving(database, "serve") as (url, _):
        # The sessions page, and a search.
        driver.get(url)
        rows = driver.find_elements(By.CSS_SELECTOR, "table.sessions tbody tr")
        assert [r.find_element(By.CSS_SELECTOR, "a.sid").text for r in rows] == [
            "medical_1",
            "notes",
            "trip_planner",
        ]
        shoot(driver, "sessions")
        box = driver.find_element(By.NAME, "q")
        box.send_keys("trip", Keys.ENTER)
        # The search loads a new page; the old one holds a trip_planner link too.
        WebDriverWait(driver, WAIT).until(ec.staleness_of(box))
        WebDriverWait(driver, WAIT).until(ec.url_contains("q=trip"))
        link = wait_for(driver, By.LINK_TEXT, "trip_planner")
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.sessions tbody tr")) == 1

        # A conversation: its current branch, then main, chosen in the select.
        link.click()
        wait_for(driver, By.ID, "items")
        assert "About 30 EUR on the train." in driver.find_element(By.ID, "items").text
        Select(driver.find_element(By.NAME, "branch")).select_by_value("main")
        WebDriverWait(driver, WAIT).until(ec.url_contains("branch=main"))
        items = driver.find_element(By.ID, "items")
        assert "Booked Hotel du Parc for two nights" in items.text
        image = driver.find_element(By.CSS_SELECTOR, "figure img")
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 48
        raw = driver.find_element(By.CSS_SELECTOR, "details.raw")
        raw.find_element(By.TAG_NAME, "summary").click()
        assert raw.find_element(By.TAG_NAME, "pre").is_displayed()
        shoot(driver, "conversation")

        # Time travel: the slider, moved one step back with the keyboard.
        driver.find_element(By.LINK_TEXT, "Time travel").click()
        slider = wait_for(driver, By.ID, "version-range")
        latest = int(slider.get_attribute("max"))
        assert slider.get_attribute("value") == str(latest)
        slider.send_keys(Keys.ARROW_LEFT)  # input, then change: the form goes there
        WebDriverWait(driver, WAIT).until(ec.url_contains(f"version={latest - 1}"))
        assert f"as of v{latest - 1}" in driver.find_element(By.CSS_SELECTOR, "p.facts").text
        driver.get(url.rstrip("/") + "/travel/notes?version=5")
        assert "Removed by v5" in driver.find_element(By.ID, "main").text
        shoot(driver, "travel")

        # The branch tree: a branch's lane links to its history.
        driver.get(url.rstrip("/") + "/tree/trip_planner")
        assert driver.find_elements(By.CSS_SELECTOR, "svg.tree circle.forkpoint")
        shoot(driver, "tree")
        driver.find_element(By.CSS_SELECTOR, "table.branches").find_element(
            By.LINK_TEXT, "cheaper"
        ).click()
        WebDriverWait(driver, WAIT).until(ec.url_contains("branch=cheaper"))

        # Usage and the log.
        driver.get(url.rstrip("/") + "/usage/trip_planner?branch=main")
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.input")) >= 4
        shoot(driver, "usage")
        driver.get(url.rstrip("/") + "/log/trip_planner")
        assert "Audit: clean." in driver.find_element(By.CSS_SELECTOR, ".audit").text
        shoot(driver, "log")

        # Live: a message another process adds appears without a reload.
        driver.get(url.rstrip("/") + "/c/notes")
        WebDriverWait(driver, WAIT).until(ec.visibility_of_element_located((By.ID, "live-status")))
        driver.execute_script("window.notReloaded = true")
        add_message(database, "a message written while the page was open")
        WebDriverWait(driver, WAIT).until(
            ec.text_to_be_present_in_element((By.ID, "items"), "while the page was open")
        )
        assert driver.execute_script("return window.notReloaded") is True
        assert driver.find_element(By.ID, "version").text == "v8"
        assert "1 turn on main" in driver.find_element(By.ID, "items").text
        shoot(driver, "live")

        # The encrypted session, locked without a key.
        driver.get(url.rstrip("/") + "/c/medical_1")
        assert "no key" in driver.find_element(By.CSS_SELECTOR, "p.locked").text
        assert "blood pressure" not in driver.page_source
        driver.get(url.rstrip("/") + "/c/nobody")
        assert "404" in driver.find_element(By.TAG_NAME, "h1").text
    errors = [e for e in console_errors(driver) if "/c/nobody" not in e]  # (the 404 itself)
    assert errors == []
