"""Settings of one runner."""
import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    workers: int = 4  # task threads in this process
    max_queued: int = 10_000  # backlog beyond which submit is refused
    heartbeat: float = 5.0  # seconds between lease refreshes
    lease: float = 30.0  # a running task whose heartbeat is older is taken back
    shutdown_grace: float = 30.0  # seconds running tasks get to finish on shutdown
    poll_interval: float = 0.5  # seconds between looks for work from other processes
    time_limit_grace: float = 5.0  # seconds past its time limit before a task is failed
    retry_base: float = 1.0  # first retry delay, doubled per attempt
    retry_cap: float = 300.0  # longest retry delay
    claim_batch: int = 16  # most tasks claimed in one transaction
    claim_gap: float = 0.005  # seconds a wake-up waits so that one claim serves several submits
    prefetch: int | None = None  # claimed tasks waiting for a worker (None: 3 per worker)
    retention: float = 7 * 24 * 3600  # seconds finished tasks are kept (0: forever)
    executor: str = "threads"  # or "celery" (TASK_EXECUTOR)
    broker_url: str = "redis://127.0.0.1:6379/0"  # CELERY_BROKER_URL, for the celery executor
    republish_after: float = 30.0  # CELERY_REPUBLISH_AFTER: a published id unclaimed this long goes again
    queues: tuple | None = None  # TASK_QUEUES: the queues this process serves (None: all)
    schedules_enabled: bool = True  # SCHEDULES_ENABLED: this process queues recurring tasks
    schedule_tz: dt.tzinfo = dt.timezone.utc  # SCHEDULE_TZ: cron expressions' time zone

    @classmethod
    def from_settings(cls, settings):
        """The runner's part of the service's settings (service.config.load_config)."""
        return cls(
            workers=settings["TASK_WORKERS"],
            max_queued=settings["TASK_MAX_QUEUED"],
            prefetch=settings["TASK_PREFETCH"],
            heartbeat=settings["TASK_HEARTBEAT"],
            lease=settings["TASK_LEASE"],
            shutdown_grace=settings["TASK_SHUTDOWN_GRACE"],
            poll_interval=settings["TASK_POLL_INTERVAL"],
            retry_base=settings["TASK_RETRY_BASE"],
            retry_cap=settings["TASK_RETRY_CAP"],
            retention=settings["TASK_RETENTION"],
            executor=settings["TASK_EXECUTOR"],
            broker_url=settings["CELERY_BROKER_URL"],
            republish_after=settings["CELERY_REPUBLISH_AFTER"],
            queues=settings["TASK_QUEUES"],
            schedules_enabled=settings["SCHEDULES_ENABLED"],
            schedule_tz=settings["SCHEDULE_TZ"],
        )
