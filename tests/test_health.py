"""/healthz and /readyz."""
def test_healthz_and_readyz_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["runner"]


def test_readyz_is_503_when_the_runner_is_down(app, client):
    client.get("/healthz")
    app.extensions["executor"].stop(grace=1)
    app.before_request_funcs[None].clear()  # keep it from restarting on this request
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["details"] == {"runner": "not running"}


def test_readyz_is_503_when_the_database_is_unreachable(client, db_url, tmp_path):
    import db
    from tests.conftest import backend

    assert client.get("/readyz").status_code == 200
    if backend(db_url) == "sqlite":
        (tmp_path / "dir.db").mkdir()  # a directory cannot be opened as a database
        unreachable = f"sqlite:///{tmp_path / 'dir.db'}"
    else:
        unreachable = "mysql+pymysql://root:@127.0.0.1:1/test"  # nothing listens on port 1
    db.init_engine(unreachable)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["details"]["database"].startswith("unreachable")
    db.init_engine(db_url)
    assert client.get("/readyz").status_code == 200
