"""A recurring task for the scheduler's process tests (TASK_MODULES=tests.scheduled_tasks).

Kept out of tests.sample_tasks: every runner of the test process would queue it.
"""
from marshmallow import Schema, fields

from service.runner import task


class Beat(Schema):
    label = fields.String(required=True)


@task("every_second", schema=Beat, every=1, args={"label": "beat"})
def every_second(ctx, label):
    return label
