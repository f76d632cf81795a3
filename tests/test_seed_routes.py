"""The article's /user routes, in process."""
import pytest

from db.models import Task, User
from tests.conftest import count_rows, wait_for


@pytest.fixture
def app_config(app_config):
    return {**app_config, "ALLOW_DB_RESET": True}


def test_article_flow_gives_the_three_rows(client):
    assert client.get("/user/initdb").get_json() == "success"
    added = client.get("/user/add")
    assert added.status_code == 200
    assert added.get_json() == 1
    for route in ("/user/thread_pool", "/user/thread"):
        response = client.get(route)
        assert response.get_json() == "success"
        assert response.headers["Location"].startswith("/api/tasks/")
    wait_for(lambda: count_rows(Task, Task.status == "succeeded") == 2, message="2 tasks")
    names = sorted(u["name"] for u in client.get("/api/users").get_json())
    assert names == ["thread", "thread pool", "zhangsan"]
    assert {u["age"] for u in client.get("/api/users").get_json()} == {12}


def test_initdb_empties_tables_and_restarts_ids(client):
    client.get("/user/add")
    client.get("/user/add")
    assert client.get("/user/initdb").status_code == 200
    assert count_rows(User) == 0
    assert client.get("/user/add").get_json() == 1


def test_initdb_refuses_while_tasks_are_queued(client):
    task_id = client.post("/api/tasks", json={"name": "noop", "delay": 3600}).get_json()["id"]
    client.get("/user/add")
    response = client.get("/user/initdb")
    assert response.status_code == 409
    assert response.get_json()["code"] == 409
    assert count_rows(User) == 1
    client.post(f"/api/tasks/{task_id}/cancel")
    assert client.get("/user/initdb").status_code == 200


def test_initdb_is_forbidden_by_default(make_app):
    client = make_app(ALLOW_DB_RESET=False).test_client()
    client.get("/user/add")
    response = client.get("/user/initdb")
    assert response.status_code == 403
    assert "ALLOW_DB_RESET" in response.get_json()["message"]
    assert count_rows(User) == 1


def test_add_is_refused_at_once_when_no_request_thread_can_be_spared(make_app):
    client = make_app(SEED_SYNC_SLOTS=0).test_client()
    response = client.get("/user/add")
    assert response.status_code == 503
    assert "SEED_SYNC_SLOTS" in response.get_json()["message"]
    assert int(response.headers["Retry-After"]) > 0
    assert count_rows(User) == 0


def test_the_benchs_article_app_answers_at_once_and_writes_its_row_untracked(database):
    from tests.bench.article_app import make_app as article_app

    url = database.url.render_as_string(hide_password=False)
    client = article_app(url).test_client()
    response = client.get("/user/thread_pool")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "success")
    wait_for(lambda: count_rows(User, User.name == "thread pool") == 1, message="the pool's row")
    assert count_rows(Task) == 0  # no task: nothing tracks it
