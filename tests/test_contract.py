"""The API keeps its documented contract: bounded integers, one error shape, honest document."""
import pytest

from db.models import MAX_ID, Task, User
from tests.conftest import count_rows

HUGE = 5181525193955560937483183063040


@pytest.mark.parametrize("path", [
    f"/api/users?page={HUGE}&page_size=64",
    "/api/users?page=99999999999999999999",
    f"/api/tasks?status=succeeded&page={HUGE}",
    f"/api/users?page=1&page_size={HUGE}",
])
def test_out_of_range_page_is_422_naming_the_field(client, path):
    response = client.get(path)
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422
    field = "page_size" if "page_size=" + str(HUGE) in path else "page"
    assert field in body["details"]["query"]


def test_the_last_page_a_client_may_ask_for_is_empty_not_an_error(client):
    client.post("/api/users", json={"name": "bo", "age": 7})
    response = client.get(f"/api/users?page={MAX_ID}&page_size=100")
    assert response.status_code == 200
    assert response.get_json() == []
    assert client.get(f"/api/tasks?page={MAX_ID}&page_size=100").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", f"/api/tasks/{HUGE}"),
    ("POST", "/api/tasks/138924583246982140657664/cancel"),
    ("GET", f"/api/users/{MAX_ID + 1}"),
    ("GET", "/api/tasks/0"),
])
def test_out_of_range_id_is_404_in_json(client, method, path):
    response = client.open(path, method=method)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_largest_id_is_looked_up_and_not_found(client):
    response = client.get(f"/api/tasks/{MAX_ID}")
    assert response.status_code == 404
    assert response.get_json()["message"] == f"task {MAX_ID} not found"


def test_text_that_is_not_unicode_is_422_and_writes_nothing(client):
    body = '{"name": "bad \\udc80 name", "age": 3}'
    response = client.post("/api/users", data=body, content_type="application/json")
    assert response.status_code == 422
    assert "name" in response.get_json()["details"]["json"]
    task = '{"name": "create_user", "args": {"name": "\\ud800", "age": 1}}'
    response = client.post("/api/tasks", data=task, content_type="application/json")
    assert response.status_code == 422
    assert count_rows(User) == 0 and count_rows(Task) == 0


@pytest.mark.parametrize("run_at", [
    "0001-01-01T00:00:00+01:00",      # before year 1 in UTC
    "1000-01-01T00:00:00Z",           # older than MySQL's DATETIME
    "9999-12-31T23:59:59-23:59",      # past year 9999 in UTC
])
def test_any_run_at_is_accepted_and_stored(client, run_at):
    response = client.post("/api/tasks", json={"name": "noop", "run_at": run_at})
    assert response.status_code == 202
    task = response.get_json()
    assert client.get(f"/api/tasks/{task['id']}").status_code == 200


def test_past_run_at_runs_now_and_keeps_its_place_in_line(client):
    first = client.post("/api/tasks", json={"name": "noop", "delay": 3600}).get_json()
    old = client.post("/api/tasks", json={"name": "noop", "run_at": "1000-01-01T00:00:00Z"})
    assert old.get_json()["run_after"] >= first["created_at"]


def spec(client):
    return client.get("/openapi.json").get_json()


def resolve(document, node):
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = document["components"][kind][name]
    return node


def test_every_documented_error_uses_the_error_shape_the_service_sends(client):
    document = spec(client)
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("2", "3")):
                    continue
                schema = resolve(document, resolve(document, response)["content"]["application/json"]["schema"])
                assert set(schema["properties"]) == {"code", "message", "details"}, (path, method, status)
                checked += 1
    assert checked > 20


def test_each_route_documents_the_error_statuses_it_can_answer(client):
    paths = spec(client)["paths"]
    submit = paths["/api/tasks"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(submit)
    assert "Retry-After" in resolve(spec(client), submit["503"])["headers"]
    assert {"404", "409"} <= set(paths["/api/tasks/{task_id}/cancel"]["post"]["responses"])
    assert "404" in paths["/api/users/{user_id}"]["get"]["responses"]
    assert {"403", "409"} <= set(paths["/user/initdb"]["get"]["responses"])
    assert "503" in paths["/user/add"]["get"]["responses"]


def test_ids_and_pages_are_documented_with_their_range(client):
    paths = spec(client)["paths"]
    task_id = paths["/api/tasks/{task_id}"]["parameters"][0]["schema"]
    assert (task_id["minimum"], task_id["maximum"]) == (1, MAX_ID)
    page = next(p for p in paths["/api/users"]["get"]["parameters"] if p["name"] == "page")
    assert page["schema"]["maximum"] == MAX_ID


def test_pagination_header_is_documented_as_the_string_it_is(client):
    document = spec(client)
    header = resolve(document, document["paths"]["/api/tasks"]["get"]["responses"]["200"]["headers"]["X-Pagination"])
    assert header["schema"]["type"] == "string"
    assert "total" in header["description"]


def test_task_body_says_which_names_exist_and_that_delay_excludes_run_at(client):
    document = spec(client)
    body = document["paths"]["/api/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = resolve(document, body)
    assert body["not"] == {"required": ["delay", "run_at"]}
    names = {variant["properties"]["name"]["enum"][0] for variant in body["oneOf"]}
    assert {"create_user", "noop"} <= names
    create_user = next(v for v in body["oneOf"] if v["properties"]["name"]["enum"] == ["create_user"])
    args = resolve(document, create_user["properties"]["args"])
    assert set(args["required"]) == {"name", "age"}
    assert args["additionalProperties"] is False
    assert "args" in create_user["required"]


def test_seed_routes_document_their_answers_and_limits(client):
    paths = spec(client)["paths"]
    add = paths["/user/add"]["get"]
    assert resolve(spec(client), add["responses"]["200"])["content"]["application/json"]["schema"]["type"] == "integer"
    assert "SEED_SYNC_DELAY" in add["description"]
    assert "ALLOW_DB_RESET" in paths["/user/initdb"]["get"]["description"]


def test_times_in_answers_say_their_offset(client):
    import datetime as dt

    user = client.post("/api/users", json={"name": "bo", "age": 7}).get_json()
    task = client.post("/api/tasks", json={"name": "noop", "delay": 60}).get_json()
    for stamp in (user["create_time"], task["created_at"], task["run_after"]):
        assert dt.datetime.fromisoformat(stamp).tzinfo is not None, stamp
