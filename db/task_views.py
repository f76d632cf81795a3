"""What a reader shows of a task beyond its row: the workflow it is a step of, its rate limit's
use, its fair turn."""
from db import fairness, rates, workflow_views
from db.models import utcnow


def described(session, tasks, now=None):
    """Set each task's `workflow`, `rate` and `fair` (read-only attributes, not columns); return tasks."""
    workflow_views.with_workflows(session, tasks)
    fairness.with_turns(session, tasks)
    return rates.with_rates(session, tasks, now or utcnow())
