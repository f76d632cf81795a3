"""The task functions themselves. Each gets a TaskContext and plain values."""
import logging
import math

from marshmallow import Schema, fields, validate

from db import Session, users
from service.runner import task
from service.schemas import Name

log = logging.getLogger(__name__)

MAX_DELAY = 300  # seconds a create_user task may be asked to work before inserting


class CreateUserArgs(Schema):
    name = Name(required=True, validate=validate.Length(min=1, max=100))
    age = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=200))
    delay = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=MAX_DELAY))


@task("create_user", schema=CreateUserArgs)
def create_user(ctx, name, age, delay=0.0):
    """Work for delay seconds (cancellable, reporting progress), insert a user, return its id."""
    steps = math.ceil(delay * 2)  # a step each half second, so a watcher sees it move
    for step in range(steps):
        ctx.progress(100 * step / steps, f"working, {delay * (steps - step) / steps:.0f}s left")
        ctx.sleep(delay / steps)
    user = users.create_user(Session, name=name, age=age)
    log.debug("inserted user %s", user.id)
    return user.id
