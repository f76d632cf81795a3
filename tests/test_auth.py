"""Access control: bearer tokens, the dashboard's session and CSRF, refusing to serve open."""
import logging
import re
import subprocess
import sys

import pytest

from db.models import Task
from service import create_app
from service.tokens import check_listening, is_loopback
from service.config import ConfigError, load_config
from tests.conftest import ROOT, count_rows

TOKENS = ["first-token", "second-token"]


@pytest.fixture
def app(make_app):
    return make_app(API_TOKENS=TOKENS, SECRET_KEY="test-secret")


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def signed_in(client):
    """Sign the client in through the form; return the session's CSRF token."""
    form = client.get("/dashboard/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = client.post("/dashboard/signin?next=/dashboard/tasks",
                           data={"token": TOKENS[1], "csrf_token": csrf})
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/tasks"
    page = client.get("/dashboard/tasks").get_data(as_text=True)
    fresh = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    assert fresh != csrf  # signing in starts a new session with a new token
    return fresh


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), bearer(""), {"Authorization": "Basic Zmlyc3Q="}])
def test_api_without_a_valid_token_is_a_json_401_and_writes_nothing(client, headers):
    response = client.post("/api/tasks", json={"name": "noop"}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/tasks", headers=headers).status_code == 401
    assert client.get("/api/stats", headers=headers).status_code == 401
    assert count_rows(Task) == 0


def test_any_listed_token_opens_the_api(client):
    for token in TOKENS:
        assert client.post("/api/tasks", json={"name": "noop"}, headers=bearer(token)).status_code == 202
    assert client.get("/api/tasks", headers=bearer(TOKENS[0])).status_code == 200
    assert count_rows(Task) == 2


def test_health_and_readiness_stay_open_and_the_document_needs_a_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 401  # it lists every task and its arguments
    document = client.get("/openapi.json", headers=bearer(TOKENS[0])).get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/api/tasks"]["post"]["security"] == [{"bearer": []}]
    assert "401" in document["paths"]["/api/tasks"]["post"]["responses"]


def test_dashboard_sends_a_stranger_to_the_sign_in_page(client):
    response = client.get("/dashboard/tasks?status=failed")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/signin?next=/dashboard/tasks?status%3Dfailed"
    assert client.get("/").headers["Location"] == "/dashboard"
    page = client.get("/dashboard/signin")
    assert page.status_code == 200 and 'name="token"' in page.get_data(as_text=True)
    assert client.get("/dashboard/static/dashboard.css").status_code == 200


def test_a_wrong_token_stays_on_the_sign_in_page(client):
    form = client.get("/dashboard/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = client.post("/dashboard/signin", data={"token": "nope", "csrf_token": csrf})
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert client.get("/dashboard").status_code == 302


def test_sign_in_without_the_forms_csrf_token_is_refused(client):
    client.get("/dashboard/signin")
    response = client.post("/dashboard/signin", data={"token": TOKENS[0]})
    assert response.status_code == 400
    assert client.get("/dashboard").status_code == 302


def test_the_session_cookie_is_signed_httponly_and_strict(client):
    signed_in(client)
    cookie = client.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Strict"
    assert "second-token" not in cookie.value  # the token itself is never stored


def test_a_signed_in_browser_reads_freely_but_writes_only_with_its_csrf_token(client):
    csrf = signed_in(client)
    assert client.get("/dashboard").status_code == 200
    assert client.get("/api/tasks").status_code == 200
    forged = client.post("/api/tasks", json={"name": "noop"})
    assert forged.status_code == 403
    assert count_rows(Task) == 0
    wrong = client.post("/api/tasks", json={"name": "noop"}, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    ok = client.post("/api/tasks", json={"name": "noop"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 202
    assert count_rows(Task) == 1


def test_sign_out_ends_the_session(client):
    csrf = signed_in(client)
    assert client.post("/dashboard/signout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/dashboard").status_code == 302
    assert client.get("/api/tasks").status_code == 401


def test_tokens_are_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.get("/api/tasks", headers=bearer("a-wrong-secret-token"))
    client.get("/api/tasks", headers=bearer(TOKENS[0]))
    text = caplog.text
    assert "a-wrong-secret-token" not in text and TOKENS[0] not in text


def test_tokens_without_a_secret_key_refuse_to_start(app_config):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({**app_config, "API_TOKENS": TOKENS, "SECRET_KEY": None})


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_an_open_server_on_a_reachable_host_is_refused_unless_asked_for(caplog):
    with pytest.raises(ConfigError, match="API_TOKENS"):
        check_listening(load_config({"HOST": "0.0.0.0"}))
    check_listening(load_config({"HOST": "0.0.0.0", "API_TOKENS": "x", "SECRET_KEY": "k"}))
    check_listening(load_config({"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "true"}))
    assert "WITHOUT authentication" in caplog.text
    check_listening(load_config({"HOST": "127.0.0.1"}))


@pytest.mark.slow
def test_gunicorn_refuses_to_start_open_on_a_reachable_host_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOST": "0.0.0.0", "PORT": "1",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    finished = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and "API_TOKENS" in lines[0], finished.stderr


# What answers without a token: the probes, the sign-in page and static files (no task or user data).
OPEN_ROUTES = {"/", "/healthz", "/readyz", "/dashboard/signin", "/dashboard/static/<path:filename>",
               "/docs/assets/<path:filename>", "/favicon.ico"}
SAMPLE_VALUES = {"id": "1", "string": "default", "path": "dashboard.css", "int": "1", "default": "x"}


def sample_url(rule):
    """The rule's path with a plausible value for each variable."""
    def fill(match):
        converter = (match.group(1) or "default").split("(")[0]
        return SAMPLE_VALUES.get(converter, "x")
    return re.sub(r"<(?:([^:>]+):)?[^>]+>", fill, rule.rule)


def test_every_route_but_the_probes_sign_in_and_static_files_needs_a_token(make_app):
    from db.models import User

    app = make_app(API_TOKENS=TOKENS, SECRET_KEY="test-secret", ALLOW_DB_RESET=True)
    client = app.test_client()
    client.post("/api/tasks", json={"name": "noop"}, headers=bearer(TOKENS[0]))  # something to read
    rules = list(app.url_map.iter_rules())
    assert {rule.rule for rule in rules} >= OPEN_ROUTES | {"/user/initdb", "/user/thread", "/metrics"}
    answered = []
    for rule in rules:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            url = sample_url(rule)
            response = client.open(url, method=method, json={} if method != "GET" else None)
            refused = response.status_code == 401 or (
                response.status_code == 302 and "/dashboard/signin" in response.headers["Location"])
            if not refused:
                answered.append((method, rule.rule))
    assert sorted(rule for _, rule in answered if rule not in OPEN_ROUTES) == []
    assert ("GET", "/healthz") in answered and ("GET", "/dashboard/signin") in answered
    assert count_rows(Task) == 1 and count_rows(User) == 0  # the walk wrote nothing, dropped nothing


def test_the_article_routes_need_a_token_and_initdb_also_the_reset_switch(make_app):
    from db.models import User

    client = make_app(API_TOKENS=TOKENS, SECRET_KEY="test-secret").test_client()
    for route in ("/user/thread", "/user/thread_pool", "/user/add", "/user/initdb"):
        response = client.get(route)
        assert response.status_code == 401 and response.get_json()["code"] == 401, route
    assert count_rows(Task) == 0 and count_rows(User) == 0
    assert client.get("/user/thread", headers=bearer(TOKENS[0])).status_code == 200
    assert client.get("/user/initdb", headers=bearer(TOKENS[0])).status_code == 403  # no ALLOW_DB_RESET
    assert count_rows(Task) == 1
