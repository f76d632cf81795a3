"""CORS only for listed origins, never with credentials."""
import pytest

LISTED = "https://app.example"


@pytest.fixture
def app_config(app_config):
    return {**app_config, "CORS_ORIGINS": [LISTED]}


def test_listed_origin_is_allowed_without_credentials(client):
    response = client.get("/api/tasks", headers={"Origin": LISTED})
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Access-Control-Allow-Credentials" not in response.headers
    preflight = client.options("/api/tasks", headers={
        "Origin": LISTED, "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == LISTED


def test_unlisted_origin_gets_no_cors_headers(client):
    for method in (client.get, client.options):
        response = method("/user/initdb", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_no_origins_by_default(make_app):
    client = make_app(CORS_ORIGINS=[]).test_client()
    response = client.get("/healthz", headers={"Origin": LISTED})
    assert "Access-Control-Allow-Origin" not in response.headers
