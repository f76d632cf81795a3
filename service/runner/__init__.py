"""The task system: submit, execute, record. Imports no Flask."""
from db.keys import KeyReused
from service.runner.canvas import InvalidWorkflow, chain, chord, group, signature
from service.runner.config import RunnerConfig
from service.runner.context import RetryTask, TaskCancelled, TaskContext, TimeLimitExceeded
from service.runner.submit import enqueue
from service.runner.task_rows import QueueFull
from service.runner.executor import Executor
from service.runner.registry import InvalidArguments, UnknownTask, registry, task

__all__ = [
    "Executor",
    "InvalidArguments",
    "InvalidWorkflow",
    "KeyReused",
    "QueueFull",
    "RetryTask",
    "RunnerConfig",
    "TaskCancelled",
    "TaskContext",
    "TimeLimitExceeded",
    "UnknownTask",
    "chain",
    "chord",
    "enqueue",
    "group",
    "make_executor",
    "registry",
    "signature",
    "task",
]


def make_executor(config):
    """The executor the settings ask for (TASK_EXECUTOR): the thread pool or Celery."""
    if config.executor == "celery":
        from service.runner.celery import CeleryExecutor

        return CeleryExecutor(config)
    from service.runner.threads import ThreadExecutor

    return ThreadExecutor(config)
