"""HTTP routing: one blueprint per resource."""
from flask import current_app


def get_runner():
    """Return this app's task runner."""
    return current_app.extensions["runner"]
