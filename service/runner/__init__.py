"""Background execution of registered tasks. Imports no Flask."""
from service.runner.config import RunnerConfig
from service.runner.context import RetryTask, TaskCancelled, TaskContext
from service.runner.registry import InvalidArguments, UnknownTask, registry, task
from service.runner.runner import Runner
from service.runner.submit import QueueFull

__all__ = [
    "InvalidArguments",
    "QueueFull",
    "RetryTask",
    "Runner",
    "RunnerConfig",
    "TaskCancelled",
    "TaskContext",
    "UnknownTask",
    "registry",
    "task",
]
