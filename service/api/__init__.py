"""HTTP routing: one blueprint per resource."""
import json

from flask import current_app, request
from flask_smorest import Blueprint, abort
from werkzeug.routing import IntegerConverter

from db import Session
from db.models import MAX_ID
from service.api.openapi import PAGINATION


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


def one_page(list_rows, query):
    """Answer a list view with list_rows(Session, limit, offset, **filters) and X-Pagination."""
    filters = dict(query)
    page, page_size = filters.pop("page"), filters.pop("page_size")
    items, total = list_rows(Session, page_size, (page - 1) * page_size, **filters)
    meta = Blueprint._make_pagination_metadata(page, page_size, total)
    return items, 200, {"X-Pagination": json.dumps(meta)}


PAGE_HEADERS = {"X-Pagination": PAGINATION}
