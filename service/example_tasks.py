"""Example tasks that reach every state a task can end in: enable with
TASK_MODULES=service.example_tasks, then submit them from the dashboard's Submit page.

- example_fail: fails at once; its error and traceback show on its page.
- example_retry: asks for another attempt `failures` times (RetryTask), then succeeds.
- example_progress: works for `seconds`, reporting its progress, and can be cancelled.
- example_add: adds `number` to the results of the workflow steps before it (chains, chords).
"""
from marshmallow import Schema, fields, validate

from service.runner import RetryTask, task

MAX_FAILURES = 5  # example_retry's most requested retries: it needs one attempt more than that
MAX_SECONDS = 300  # example_progress's longest run


class FailArgs(Schema):
    message = fields.String(load_default="this example always fails",
                            validate=validate.Length(min=1, max=200))


class RetryArgs(Schema):
    failures = fields.Integer(load_default=2, strict=True,
                              validate=validate.Range(min=0, max=MAX_FAILURES))


class ProgressArgs(Schema):
    seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0, max=MAX_SECONDS))
    steps = fields.Integer(load_default=10, strict=True, validate=validate.Range(min=1, max=100))


class AddArgs(Schema):
    number = fields.Float(load_default=0, validate=validate.Range(min=-1e12, max=1e12))
    # What the steps before it returned, handed on by its workflow (numbers, or lists of them).
    results = fields.List(fields.Raw(allow_none=True), load_default=None, allow_none=True)


class ExampleError(RuntimeError):
    """What example_fail raises: not in its retry_on, so the task fails without a retry."""


@task("example_fail", schema=FailArgs)
def example_fail(ctx, message):
    """Raise ExampleError(message): the task ends failed, with that error."""
    raise ExampleError(message)


@task("example_retry", schema=RetryArgs, max_attempts=MAX_FAILURES + 1)
def example_retry(ctx, failures):
    """Raise RetryTask on the first `failures` attempts, then succeed with the attempt count."""
    if ctx.attempt <= failures:
        raise RetryTask(f"attempt {ctx.attempt} asks for another ({failures} to fail)")
    return {"attempts": ctx.attempt}


@task("example_progress", schema=ProgressArgs)
def example_progress(ctx, seconds, steps):
    """Work for `seconds` in `steps` equal steps, reporting progress after each; cancellable."""
    for step in range(steps):
        ctx.progress(100 * step / steps, f"step {step + 1} of {steps}")
        ctx.sleep(seconds / steps)  # raises TaskCancelled as soon as a cancel is asked
    ctx.progress(100, "done")
    return {"steps": steps}


@task("example_add", schema=AddArgs)
def example_add(ctx, number, results):
    """Return number plus every number in results: a chord's callback sums its members."""
    return number + _total(results)


def _total(value):
    if isinstance(value, list):
        return sum(_total(each) for each in value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
