"""HTTP routing: one blueprint per resource."""
import json

import flask_smorest
from flask import current_app, request
from flask_smorest import abort
from webargs import flaskparser
from werkzeug.routing import IntegerConverter

from db import Session
from db.models import MAX_ID
from service.api.openapi import PAGINATION
from service.errors import error_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class JsonParser(flaskparser.FlaskParser):
    """webargs' parser, except that JSON nested past what Python can decode is a 400 like any
    other invalid JSON body, not a RecursionError."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            flaskparser.abort(400, messages={"json": ["Invalid JSON body: nested too deeply."]})


class Blueprint(flask_smorest.Blueprint):
    """Every resource's blueprint: flask-smorest's, reading bodies with JsonParser."""

    ARGUMENTS_PARSER = JsonParser()


class IdConverter(IntegerConverter):
    """<id:...> in a route: 1..MAX_ID, so an id no row can have is a 404, not a database error."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)


def get_executor():
    """Return this app's executor (service.runner.executor)."""
    return current_app.extensions["executor"]


def require_body():
    """Refuse a request without a body: a bulk action on an empty filter must be asked for with {}."""
    if not request.get_data(cache=True).strip():
        abort(422, message="A JSON body is required: the filter, or {} for every task.",
              details={"json": {"_schema": ["Missing request body."]}})


def reads_json(view, method):
    """True if the view answering method takes a JSON body (flask-smorest's @blp.arguments, location json)."""
    function = getattr(getattr(view, "view_class", None), method.lower(), view)  # a MethodView's method
    parameters = getattr(function, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(parameter["in"] == "json" for parameter in parameters)


def require_json_bodies(app):
    """Answer 415 to a body sent to a route that reads JSON without saying it is JSON.

    Without the header webargs sees no body at all: a submit got "name: Missing data",
    and a bulk cancel or retry would have taken every task. A request without a body
    goes on to its view as before (a task's cancel needs none). Call it after the
    blueprints (it reads their routes) and after init_auth (a stranger gets the 401).
    """
    routes = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              for method in rule.methods & BODY_METHODS
              if reads_json(app.view_functions[rule.endpoint], method)}
    app.before_request(lambda: refuse_non_json_body(routes))


def refuse_non_json_body(routes):
    """before_request: the 415 of require_json_bodies, or None to go on."""
    if (request.endpoint, request.method) not in routes or request.is_json:
        return None
    if not request.get_data(cache=True).strip():
        return None
    given = request.headers.get("Content-Type") or "none"
    return error_response(415, "Content-Type: application/json is required: this route reads a JSON body.",
                          {"headers": {"Content-Type": [f"must be application/json, got {given!r}"]}})


def one_page(list_rows, query):
    """Answer a list view with list_rows(Session, limit, offset, **filters) and X-Pagination."""
    filters = dict(query)
    page, page_size = filters.pop("page"), filters.pop("page_size")
    items, total = list_rows(Session, page_size, (page - 1) * page_size, **filters)
    meta = flask_smorest.Blueprint._make_pagination_metadata(page, page_size, total)
    return items, 200, {"X-Pagination": json.dumps(meta)}


PAGE_HEADERS = {"X-Pagination": PAGINATION}
