"""The flow bench's plain task (TASK_MODULES for its worker without a rate limit declared)."""
from marshmallow import Schema

from service.runner import task


class NoArgs(Schema):
    pass


@task("flow_noop", schema=NoArgs)
def flow_noop(ctx):
    """Do nothing."""
