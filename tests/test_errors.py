"""Unexpected failures answer with the JSON error shape and no internals."""


def test_unexpected_error_is_json_500_without_traceback(make_app):
    app = make_app()

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == 500
    assert "secret detail" not in response.get_data(as_text=True)
    assert body["details"] == {}


def test_debug_mode_adds_the_error_to_details(make_app):
    app = make_app(DEBUG=True)

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret detail")

    body = app.test_client().get("/boom").get_json()
    assert "secret detail" in body["details"]["error"]


def test_database_down_is_503_with_retry_after(make_app, db_url, tmp_path):
    import db
    from tests.conftest import backend

    client = make_app(TASK_WORKERS=0).test_client()
    if backend(db_url) == "sqlite":
        (tmp_path / "dir.db").mkdir()  # a directory cannot be opened as a database
        db.init_engine(f"sqlite:///{tmp_path / 'dir.db'}")
    else:
        db.init_engine("mysql+pymysql://root:@127.0.0.1:1/test")  # nothing listens on port 1
    response = client.post("/api/tasks", json={"name": "noop"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["code"] == 503
