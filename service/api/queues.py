"""/api/queues: the named queues, pausing or resuming one, removing an unused one's record."""
from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields

from db import Session, queues
from service.api import Blueprint
from service.runner import registry
from db.queues import check_queue_name
from service.schemas import UtcDateTime

blp = Blueprint("queues", __name__, url_prefix="/api/queues", description="Named queues")

QUEUE_PATH = "<string(minlength=1, maxlength=100):name>"


class NamedQueueOut(Schema):
    name = fields.String(required=True)
    paused = fields.Boolean(required=True)
    changed_at = UtcDateTime(required=True, allow_none=True,
                             metadata={"description": "when it was last paused or resumed"})
    queued = fields.Integer(required=True)
    reserved = fields.Integer(required=True, metadata={"description": "claimed ahead by a task process, not started"})
    running = fields.Integer(required=True)


def known():
    """The queues declared by a task or configured (TASK_QUEUES)."""
    return registry.queues(current_app.config["TASK_QUEUES"])


def queue_state(name):
    """The queue's row of the list."""
    return next(q for q in queues.list_queues(Session, known() + [name]) if q["name"] == name)


def existing(name):
    """name, or a 404 naming the queues that exist (a typo must not make a queue)."""
    try:
        check_queue_name(name)
    except ValueError as error:
        abort(404, message=str(error))
    if not queues.queue_exists(Session, name, known()):
        names = [q["name"] for q in queues.list_queues(Session, known())]
        abort(404, message=f"no queue named {name!r}; queues: {', '.join(names)}",
              details={"path": {"name": ["not a configured or declared queue, and holds no task"]}})
    return name


def change(name, paused):
    """Pause or resume an existing queue and answer its state."""
    queues.set_paused(Session, existing(name), paused)
    Session.commit()
    return queue_state(name)


@blp.route("")
class Queues(MethodView):
    @blp.response(200, NamedQueueOut(many=True))
    def get(self):
        """Every queue: registered tasks', paused ones and those holding tasks."""
        return queues.list_queues(Session, known())


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


@blp.route(f"/{QUEUE_PATH}")
class NamedQueue(MethodView):
    @blp.response(204)
    @blp.alt_response(404, description="No record of this queue")
    @blp.alt_response(409, description="Declared by a task, configured, or holding unfinished tasks")
    def delete(self, name):
        """Remove the record of a queue nothing declares or configures and that holds no unfinished task."""
        if name in known():
            abort(409, message=f"queue {name!r} is declared by a task or configured; pause or resume it instead")
        outcome = queues.remove_queue(Session, name)
        if outcome == queues.NO_RECORD:
            abort(404, message=f"no record of a queue named {name!r}")
        if outcome == queues.IN_USE:
            abort(409, message=f"queue {name!r} holds unfinished tasks; cancel them or let them finish first")
        Session.commit()
        return None
