"""/api/queues: the named queues, and pausing or resuming one."""
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields

from db import Session, queues
from service.runner import registry
from service.runner.registry import check_queue_name
from service.schemas import UtcDateTime

blp = Blueprint("queues", __name__, url_prefix="/api/queues", description="Named queues")

QUEUE_PATH = "<string(minlength=1, maxlength=100):name>"


class NamedQueueOut(Schema):
    name = fields.String(required=True)
    paused = fields.Boolean(required=True)
    changed_at = UtcDateTime(required=True, allow_none=True,
                             metadata={"description": "when it was last paused or resumed"})
    queued = fields.Integer(required=True)
    running = fields.Integer(required=True)


def queue_state(name):
    """The queue's row of the list (a queue nobody used yet reads as empty and running)."""
    return next(q for q in queues.list_queues(Session, registry.queues() + [name]) if q["name"] == name)


def change(name, paused):
    """Pause or resume name (a 404 for a name no queue can have) and answer its state."""
    try:
        check_queue_name(name)
    except ValueError as error:
        abort(404, message=str(error))
    queues.set_paused(Session, name, paused)
    Session.commit()
    return queue_state(name)


@blp.route("")
class Queues(MethodView):
    @blp.response(200, NamedQueueOut(many=True))
    def get(self):
        """Every queue: registered tasks', paused ones and those holding tasks."""
        return queues.list_queues(Session, registry.queues())


@blp.route(f"/{QUEUE_PATH}/pause")
class PauseQueue(MethodView):
    @blp.response(200, NamedQueueOut)
    def post(self, name):
        """Pause a queue: its tasks stay queued (running ones finish); nothing is lost."""
        return change(name, paused=True)


@blp.route(f"/{QUEUE_PATH}/resume")
class ResumeQueue(MethodView):
    @blp.response(200, NamedQueueOut)
    def post(self, name):
        """Resume a queue: its waiting tasks run again."""
        return change(name, paused=False)
