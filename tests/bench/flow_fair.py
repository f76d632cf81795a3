"""The flow bench's fair task, beside its plain one (TASK_MODULES for the worker that declares fair share)."""
from marshmallow import Schema, fields

from service.runner import task
from tests.bench.flow_plain import flow_noop  # noqa: F401  the plain task, declared here too


class Customer(Schema):
    customer = fields.String(required=True)


@task("flow_fair", schema=Customer, fair_key="customer")
def flow_fair(ctx, customer):
    """Do nothing, in turn with the other customers."""
