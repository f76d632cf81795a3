"""/docs: the API reference, Swagger UI over /openapi.json, with every asset served by the app."""
import re

import pytest

from tests.browser import browser, new_page, page, screenshot  # noqa: F401  fixtures
from tests.server import Server, migrate


def local_assets(html):
    """The src and href of every script, stylesheet and icon on a page."""
    return re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', html)


def test_docs_page_is_served_with_its_own_assets_and_linked_from_the_dashboard(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'data-spec="/openapi.json"' in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert "<script>" not in page  # no inline script: a strict CSP can forbid them
    assets = local_assets(page)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and served.content_length > 0, asset
    assert client.get("/openapi.json").status_code == 200
    assert '<a href="/docs">API</a>' in client.get("/dashboard").get_data(as_text=True)


def test_docs_page_and_its_assets_are_served_to_a_signed_in_reader_when_tokens_are_required(make_app):
    client = make_app(API_TOKENS=["secret-token"], SECRET_KEY="docs-secret").test_client()
    bearer = {"Authorization": "Bearer secret-token"}
    page = client.get("/docs", headers=bearer)
    assert page.status_code == 200
    for asset in local_assets(page.get_data(as_text=True)):
        assert client.get(asset, headers=bearer).status_code == 200, asset


@pytest.fixture
def server(empty_db, tmp_path):
    migrate(empty_db)
    server = Server(empty_db, tmp_path / "server.log", TASK_POLL_INTERVAL=0.1).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_docs_page_renders_the_operations_with_requests_only_to_this_server(server, page):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.base + "/docs")
    # Swagger UI writes each path with zero-width spaces after its slashes; data-path is exact.
    page.locator('.opblock-summary-path[data-path="/api/tasks"]').first.wait_for()
    assert "tasks" in page.inner_text(".opblock-summary-path[data-path='/api/tasks']")
    assert page.locator(".opblock").count() > 10  # every operation, not an error box
    page.wait_for_load_state("networkidle")
    assert f"{server.base}/openapi.json" in requests
    assert all(url.startswith(server.base + "/") for url in requests), requests
    screenshot(page, "docs")
