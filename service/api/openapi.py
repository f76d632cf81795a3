"""The OpenAPI document says what the service really sends: one error shape, every status.

It is also read at /docs, through the Swagger UI that the flask-swagger-ui package ships:
served by this app, so the page works offline.
"""
import http
import os

import flask_swagger_ui
from apispec import BasePlugin
from flask import Blueprint, render_template, url_for
from flask_smorest import Api
from marshmallow import Schema, fields

ERROR = "Error"
BEARER = "bearer"
UNAVAILABLE = "Unavailable"

RETRY_AFTER = {"description": "Seconds to wait before trying again.",
               "schema": {"type": "integer", "minimum": 1}}
LOCATION = {"description": "Where the new resource can be read.", "schema": {"type": "string"}}
PAGINATION = {
    "description": "A JSON object in a string: total, total_pages, first_page, last_page, "
                   "page, previous_page, next_page (the page fields only when there are items).",
    "schema": {"type": "string"},
    "example": '{"total": 42, "total_pages": 5, "first_page": 1, "last_page": 5, '
               '"page": 2, "previous_page": 1, "next_page": 3}',
}


class ErrorOut(Schema):
    """Every error: {"code", "message", "details"} (service.errors builds it)."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status."})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={
        "description": 'What went wrong where, e.g. {"json": {"age": ["Not a valid integer."]}}'})


def _is_error(status):
    """True for a 4xx or 5xx key of an operation's responses (flask-smorest uses ints)."""
    return str(status)[0] in "45"


def _status(code):
    """flask-smorest's name for the documented response of this status."""
    return http.HTTPStatus(code).name


class StandardResponses(BasePlugin):
    """Add to every operation the errors any route of its kind can answer.

    Each entry refers to a component response carrying ErrorOut, so routes
    added later are documented the same way without repeating it.
    """

    def __init__(self, tokens_required=False):
        self.tokens_required = tokens_required

    def init_spec(self, spec):
        if self.tokens_required:
            spec.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer",
                                                     "description": "one of API_TOKENS"})
        spec.components.schema(ERROR, schema=ErrorOut)
        spec.components.response(UNAVAILABLE, {
            "description": "The database is unreachable, the queue is full or the route is busy.",
            "headers": {"Retry-After": RETRY_AFTER},
            "content": {"application/json": {"schema": ERROR}},
        })

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                # alt_response(409, description=...) documents no body: it is an error
                if _is_error(status) and isinstance(response, dict) and "content" not in response:
                    response["content"] = {"application/json": {"schema": ERROR}}
            if "requestBody" in operation:
                responses.setdefault(400, _status(400))  # malformed JSON
                responses.setdefault(413, _status(413))  # larger than MAX_CONTENT_LENGTH
                responses.setdefault(422, _status(422))
            if "{" in path:
                responses.setdefault(404, _status(404))
            if path.startswith(("/api/", "/user/")):
                responses.setdefault(503, UNAVAILABLE)
            if self.tokens_required and path.startswith("/api/"):
                operation["security"] = [{BEARER: []}]
                responses.setdefault(401, _status(401))


class ServiceApi(Api):
    """flask-smorest's Api, documenting our error shape instead of its own, readable at /docs."""

    ERROR_SCHEMA = ErrorOut

    def __init__(self, app):
        plugin = StandardResponses(tokens_required=bool(app.config["API_TOKENS"]))
        super().__init__(app, spec_kwargs={"extra_plugins": [plugin]})
        app.register_blueprint(docs)


# Swagger UI's distribution files (swagger-ui-bundle.js, swagger-ui.css), as the package ships them.
SWAGGER_UI_DIST = os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist")

# Not flask-smorest's OPENAPI_SWAGGER_UI_PATH: its page starts Swagger UI from an inline
# script; ours starts it from a file (dashboard/static/docs.js), as a strict CSP wants.
docs = Blueprint("docs", __name__, url_prefix="/docs", static_folder=SWAGGER_UI_DIST,
                 static_url_path="/assets")


@docs.route("")
def page():
    """The API reference: Swagger UI over /openapi.json, every asset served by this app."""
    return render_template("dashboard/docs.html", spec_url=url_for("api-docs.openapi_json"))


def describe_task_body(api, registry):
    """Make POST /api/tasks's body name each registered task with its own arguments.

    The server checks args against the named task's schema and refuses delay
    together with run_at; the document says both, so a request it calls valid
    is one the server accepts.
    """
    body = api.spec.components.schemas["TaskIn"]
    body["oneOf"] = _task_variants(api, registry)
    body["not"] = {"required": ["delay", "run_at"]}


def _task_variants(api, registry):
    """One JSON schema per registered task: its name, and its arguments as its schema checks them."""
    variants = []
    for name in registry.names():
        args = api.ma_plugin.converter.schema2jsonschema(registry.get(name).schema)
        variants.append({"properties": {"name": {"type": "string", "enum": [name]}, "args": args},
                         "required": ["name", "args"] if args.get("required") else ["name"]})
    return variants


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def describe_workflow_body(api, registry):
    """Say exactly which trees POST /api/workflows takes: a step is a task or one composite.

    marshmallow reads a step as one object with every field and checks the
    combinations in code; the document spells each kind out (oneOf), so a body
    it calls valid is one the server accepts, but for the nesting and size limits.
    """
    schemas = api.spec.components.schemas
    task = {key: value for key, value in schemas["StepIn"].items() if key != "properties"}
    task["properties"] = {key: value for key, value in schemas["StepIn"]["properties"].items()
                          if key in ("name", "args", "delay", "max_attempts", "time_limit", "priority")}
    task["required"] = ["name"]
    task["oneOf"] = _task_variants(api, registry)
    steps = schemas["StepIn"]["properties"]["chain"]
    on_error = {**_ref("TaskStep"), "description": "a task step, run once if a step below fails"}

    def composite(kind, extra=None):
        shape = _ref("ChordIn") if kind == "chord" else steps
        return {"type": "object", "required": [kind], "additionalProperties": False,
                "properties": {kind: shape, "on_error": on_error, **(extra or {})}}

    cancel = {"cancel_on_failure": schemas["WorkflowIn"]["properties"]["cancel_on_failure"]}
    api.spec.components.schema("TaskStep", task)
    schemas["StepIn"].clear()
    schemas["StepIn"]["oneOf"] = [_ref("TaskStep")] + [composite(kind) for kind in ("chain", "group", "chord")]
    schemas["ChordIn"]["required"] = ["group", "then"]
    schemas["WorkflowIn"].clear()
    schemas["WorkflowIn"]["oneOf"] = [composite(kind, cancel) for kind in ("chain", "group", "chord")]
