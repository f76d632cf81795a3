"""/api/users."""
import pytest

from db.models import User
from tests.conftest import count_rows


def test_create_then_get_and_list_users(client):
    response = client.post("/api/users", json={"name": "bo", "age": 7})
    assert response.status_code == 201
    user = response.get_json()
    assert response.headers["Location"] == f"/api/users/{user['id']}"
    assert client.get(f"/api/users/{user['id']}").get_json()["name"] == "bo"
    client.post("/api/users", json={"name": "cy", "age": 8})
    page = client.get("/api/users?page_size=1&page=2")
    assert [u["name"] for u in page.get_json()] == ["cy"]
    assert '"total": 2' in page.headers["X-Pagination"]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"age": 1}, "name"),
        ({"name": "x" * 101, "age": 1}, "name"),
        ({"name": "x", "age": -1}, "age"),
        ({"name": "x", "age": "1"}, "age"),
        ({"name": "x", "age": 1, "admin": True}, "admin"),
    ],
)
def test_invalid_user_is_422_and_writes_nothing(client, payload, field):
    response = client.post("/api/users", json=payload)
    assert response.status_code == 422
    assert field in response.get_json()["details"]["json"]
    assert count_rows(User) == 0


def test_missing_user_is_404(client):
    assert client.get("/api/users/31337").status_code == 404
