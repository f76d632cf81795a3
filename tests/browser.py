"""Headless Chromium for the dashboard tests: Debian's /usr/bin/chromium driven by Playwright."""
import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# This machine's network is closed: without these Chromium keeps dialling out.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var",
                           "screenshots")


def require_browser():
    """Skip without Chromium, unless REQUIRE_BROWSER is set (CI sets it: a skip there hides a gap)."""
    missing = None
    if not shutil.which(CHROMIUM):
        missing = f"{CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing and os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"browser tests must run here: {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module's tests."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """Make pages, each in a fresh context (no cookies): new_page(width, height, timezone_id=...)."""
    contexts = []

    def make(width=1200, height=900, **options):
        context = browser.new_context(viewport={"width": width, "height": height}, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    """A fresh browser context (no cookies) and page, 1200 x 900."""
    return new_page()


def screenshot(page, name):
    """Save the page under var/screenshots/<name>.png."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)
