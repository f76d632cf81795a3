"""The service: a Flask app (service.app) over a task system (service.runner) that needs no Flask."""


def create_app(config=None):
    """Build the Flask app; Flask is imported only here, so the task system never pulls it in."""
    from service.app import create_app as build

    return build(config)
