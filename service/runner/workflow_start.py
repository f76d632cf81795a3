"""Starting a workflow's steps: each waiting step once, its task inserted with what came before it."""
from db import bulk
from db import workflows as steps
from db.models import ACTIVE, SUCCEEDED, WAITING
from service.runner.registry import registry
from service.runner.task_rows import insert_rows, task_row


class Starter:
    """Starts steps in one transaction, and inserts all their tasks in one go at the end."""

    def __init__(self, session):
        self.session = session
        self.pending = []  # (node, task row)
        self.locked = set()  # workflows whose row this transaction holds, found running

    def activate(self, node, results=None, failure=None):
        """Start a waiting step (only one transaction can): its task, or its first steps.
        Steps that succeeded already (a retried workflow's) are passed over."""
        session = self.session
        if node.position != steps.ON_ERROR and not self.running(node.workflow_id):
            return
        if node.kind == "group":
            members = [member for member in steps.steps_of(session, node.id) if member.status != SUCCEEDED]
            if not steps.start_group(session, node, [member.position for member in members]):
                return
            for member in members:
                self.activate(member, results)
            return
        if not steps.move(session, node.id, WAITING, ACTIVE):
            return
        if node.kind == "task":
            self.pending.append((node, self._task_row(node.spec, results, failure)))
            return
        # a chain or chord: its first step that has not succeeded, given what the one before returned
        children = steps.steps_of(session, node.id)
        done = [child for child in children if child.status == SUCCEEDED]
        if done:
            results = handed_on(node.kind, result_of(session, done[-1]))
        self.activate(children[len(done)], results)

    def running(self, workflow_id):
        """True if the workflow still runs; its row is then locked till this transaction ends."""
        if workflow_id not in self.locked:
            if not steps.lock_running(self.session, workflow_id):
                return False
            self.locked.add(workflow_id)
        return True

    @staticmethod
    def _task_row(stored, results, failure):
        spec = registry.get(stored["name"])
        args = dict(stored["args"])
        fields = spec.schema.fields
        if results is not None and "results" in fields:
            args["results"] = results
        if failure is not None and "failure" in fields:
            args["failure"] = failure
        options = stored["options"]
        return task_row(spec, args, delay=options.get("delay"), max_attempts=options.get("max_attempts"),
                        time_limit=options.get("time_limit"), priority=options.get("priority"))

    def flush(self):
        """Insert the started steps' tasks; return their ids, in the order the steps started.
        A step run again (a retried workflow's) names the task it ran before as the one it retries."""
        if not self.pending:
            return []
        rows = [{**row, "workflow_node": node.id, "retry_of": node.task_id if node.position != steps.ON_ERROR else None}
                for node, row in self.pending]
        made = insert_rows(self.session, rows)
        for (node, _), row, task in zip(self.pending, rows, made):
            steps.set_task(self.session, node.id, task.id)
            if row["retry_of"] is not None:
                bulk.set_retry(self.session, row["retry_of"], task.id)  # counted as a retry once committed
        self.pending = []
        return [task.id for task in made]


def handed_on(kind, result):
    """What a chain's or chord's step receives as `results` from the step before it."""
    return result if kind == "chord" else [result]


def result_of(session, node):
    """A step's result: its task's; a group's, its members' in order; a chain's or chord's, its last step's."""
    if node.kind == "task":
        return steps.task_results(session, [node.task_id]).get(node.task_id)
    members = steps.steps_of(session, node.id)
    if node.kind != "group":
        return result_of(session, members[-1])
    found = steps.task_results(session, [m.task_id for m in members if m.kind == "task" and m.task_id])
    return [found.get(m.task_id) if m.kind == "task" else result_of(session, m) for m in members]
