"""HTTP routing: one blueprint per resource."""
from flask import current_app


def get_runner():
    """Return this app's task runner."""
    return current_app.extensions["runner"]


def page_window(pagination_parameters):
    """Return (limit, offset) for flask-smorest's page and page_size."""
    size = pagination_parameters.page_size
    return size, (pagination_parameters.page - 1) * size
