"""The flow bench's rate-limited task, beside its plain one (TASK_MODULES for the worker that declares a limit)."""
from service.runner import task
from tests.bench.flow_plain import NoArgs

RATE = "10/s"


@task("flow_rated", schema=NoArgs, rate_limit=RATE)
def flow_rated(ctx):
    """Do nothing, at most 10 a second."""
