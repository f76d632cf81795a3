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
