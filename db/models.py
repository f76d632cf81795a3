"""Tables: the article's as_user and the durable task queue."""
import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    desc,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.dialects import column_type, dialect_of, only_where, partial_where, with_partial_indexes

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Sub-second precision everywhere: leases, ordering and timings need it.
Timestamp = column_type(DateTime(), "timestamp")
# Keys compared byte for byte, as Python compares them: "aB" and "Ab" are two idempotency keys.
ExactKey = column_type(String(200), "exact key")

# reserved: claimed ahead by a task process, waiting for one of its workers (not running yet).
QUEUED, RESERVED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "reserved",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATES = (QUEUED, RESERVED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED)
UNFINISHED_STATES = (QUEUED, RESERVED, RUNNING)
HELD_STATES = (RESERVED, RUNNING)  # a task process holds it: owner and lease are set
DEFAULT_QUEUE = "default"

# Ids are INTEGER columns: MySQL's signed INT holds up to 2**31 - 1 (SQLite more).
MAX_ID = 2**31 - 1


def utcnow():
    """Return the current UTC time as a naive datetime (how every column stores it)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """The article's user, column for column."""

    __tablename__ = "as_user"

    id: Mapped[int] = mapped_column("us_id", Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column("us_name", String(100))
    age: Mapped[int | None] = mapped_column("us_age", Integer)
    create_time: Mapped[dt.datetime | None] = mapped_column(
        "us_create_time", DateTime, default=dt.datetime.now
    )


class Task(Base):
    """One unit of background work; the table is the queue."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'reserved', 'running', 'succeeded', 'failed', 'cancelled')",
            name="status",
        ),
        # The claim query: queued plain rows (no fair place, no limit key) in claim order
        # (highest priority, then due first, then oldest), read in that order and skipped
        # while not due; fair and limited rows sit apart, so a backlog of them is never read
        # past. On SQLite only queued rows are in it, so a task's finish and most of its
        # claim touch no index page (MySQL has no partial indexes: there it holds every
        # row). Name and queue make counting queued (and on MySQL running) tasks per name
        # and skipping paused queues index-only.
        # (alembic cannot compare a DESC column: tests/test_migrations.py checks it instead)
        Index("ix_tasks_claim", "status", "fair_place", "limit_key", desc("priority"), "run_after", "id", "name",
              "queue", **partial_where(text("status = 'queued'")), info={"compare": False}),
        # Where IS NULL terms do not keep an index's order (PostgreSQL): the plain claim's own.
        only_where(Index("ix_tasks_plain", desc("priority"), "run_after", "id", "queue",
                         **partial_where(text("status = 'queued' AND limit_key IS NULL AND fair_place IS NULL")),
                         info={"compare": False}),
                   lambda dialect: not dialect.is_null_keeps_order),
        # Tasks under a concurrency limit: how many of a key run, and its due ones in
        # claim order. On SQLite only limited tasks are in it.
        Index("ix_tasks_limit", "status", "limit_key", desc("priority"), "run_after", "id",
              **partial_where(text("limit_key IS NOT NULL")), info={"compare": False}),
        # Which limit keys have due tasks, and their limits (db.fitting.keys_waiting): read in
        # group order off this index alone, where indexes can be partial (on MySQL every
        # task would pay for it; there ix_tasks_limit serves).
        with_partial_indexes(Index("ix_tasks_limit_groups", "status", "limit_key", "rate_key", "concurrency",
                                   "rate_limit", "run_after", "queue",
                                   **partial_where(text("limit_key IS NOT NULL")))),
        # Fair tasks: their due ones in turn order (the fair claim), and a key's last turn (a
        # submit's). On SQLite and PostgreSQL only fair tasks are in them; on MySQL the claim
        # reads the range of rows that have a place (a NULL sorts below every place).
        Index("ix_tasks_fair", "status", "fair_place", "id", "run_after", "queue",
              **partial_where(text("fair_place IS NOT NULL"))),
        Index("ix_tasks_fair_key", "status", "fair_key", "fair_place",
              **partial_where(text("fair_key IS NOT NULL"))),
        Index("ix_tasks_name_id", "name", "id"),
        # Retention, the stats roll-up and the last hour's chart read by finish time.
        Index("ix_tasks_finished_at", "finished_at"),
        # SQLite only (MySQL's status index serves these): reserved and running rows for lease
        # recovery and counts, failed and cancelled rows for their lists, without
        # a scan of the table. Few rows are ever in them.
        *(with_partial_indexes(Index(f"ix_tasks_{status}", "id", **partial_where(text(f"status = '{status}'"))))
          for status in (RESERVED, RUNNING, FAILED, CANCELLED)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(String(255))
    result: Mapped[object | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    time_limit: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    run_after: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # A retry is a new task: the old one keeps its error and points at the new one.
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first
    queue: Mapped[str] = mapped_column(String(100), default=DEFAULT_QUEUE)
    # @task(concurrency=N): at most concurrency tasks with this key run at once.
    limit_key: Mapped[str | None] = mapped_column(ExactKey)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    # @task(rate_limit="N/Ts"): at most rate_limit starts with this key in any rate_window seconds.
    # A rate-limited task also has a limit_key (its concurrency key, else its rate key), so the
    # limited claim takes it.
    rate_key: Mapped[str | None] = mapped_column(ExactKey)
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    rate_window: Mapped[float | None] = mapped_column(Float)
    # @task(fair_key=...): the key it shares the queue fairly under, and its place in the fair
    # claim's order: its priority's band, then its turn (db.fairness gives it at submit).
    fair_key: Mapped[str | None] = mapped_column(ExactKey)
    fair_place: Mapped[int | None] = mapped_column(BigInteger)
    retry_of: Mapped[int | None] = mapped_column(Integer)
    retried_by: Mapped[int | None] = mapped_column(Integer)
    # When its id was last handed to a broker (Celery executor); back to NULL when requeued.
    published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # The workflow step it runs (workflow_nodes.id); its end settles that step.
    workflow_node: Mapped[int | None] = mapped_column(Integer)
    # Not columns: set where a reader looked them up (task_views.described): the workflow of
    # that step, its rate limit's use, and its fair key and turn.
    workflow = None
    rate = None
    fair = None

    @property
    def finished(self):
        return self.status in FINISHED_STATES


# A workflow step: waiting (not started), active (its task or members are under way), or
# finished as its task or members decided.
WAITING, ACTIVE = "waiting", "active"
NODE_STATES = (WAITING, ACTIVE, SUCCEEDED, FAILED, CANCELLED)
WORKFLOW_STATES = (RUNNING, SUCCEEDED, FAILED, CANCELLED)


# The order claims take due tasks in (ix_tasks_claim serves it): highest priority, earliest due, oldest.
CLAIM_ORDER = (Task.__table__.c.priority.desc(), Task.__table__.c.run_after, Task.__table__.c.id)


class Workflow(Base):
    """Tasks run as a chain, group or chord: its status, and what failed it."""

    __tablename__ = "workflows"
    __table_args__ = (CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')",
                                      name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default=RUNNING, index=True)
    # On a member's failure: cancel the unfinished members (True) or let them finish.
    cancel_on_failure: Mapped[bool] = mapped_column(Boolean, default=True)
    # Its unfinished members were cancelled after it failed or was cancelled (or it has none).
    swept: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_task: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class WorkflowNode(Base):
    """One step of a workflow's tree: a task, or a chain, group or chord of steps.

    A group counts its members in `shards` WorkflowCounter rows (member position
    modulo shards), so members ending together lock different rows; its own
    `pending` counts the shards not yet at zero. The commit that takes a shard to
    zero moves it (locking the group row), so the commit that ends the last member knows it.
    """

    __tablename__ = "workflow_nodes"
    __table_args__ = (CheckConstraint("status IN ('waiting', 'active', 'succeeded', 'failed', 'cancelled')",
                                      name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_id: Mapped[int] = mapped_column(Integer, ForeignKey("workflows.id", ondelete="CASCADE"),
                                             index=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    position: Mapped[int] = mapped_column(Integer)  # among its parent's steps; -1: the on_error step
    kind: Mapped[str] = mapped_column(String(8))  # task, chain, group or chord
    spec: Mapped[dict | None] = mapped_column(JSON)  # a task step's name, args and options
    status: Mapped[str] = mapped_column(String(16), default=WAITING)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[int | None] = mapped_column(Integer, index=True)
    shards: Mapped[int | None] = mapped_column(Integer)  # a started group's counter rows


class WorkflowCounter(Base):
    """One shard of a group's count of unfinished members."""

    __tablename__ = "workflow_counters"

    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the group's step
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(Integer, index=True)
    pending: Mapped[int] = mapped_column(Integer)


class TaskQueue(Base):
    """A queue that has been paused (or resumed): its tasks stay queued while it is."""

    __tablename__ = "task_queues"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TaskLimit(Base):
    """A concurrency limit's key: claims of its tasks take turns on this row (MySQL locks it)."""

    __tablename__ = "task_limits"

    limit_key: Mapped[str] = mapped_column(ExactKey, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TaskRateStart(Base):
    """A start of a rate-limited task, counted against its key until counts_until (its start
    plus the window); starts of a key are logged under that key's task_limits row lock."""

    __tablename__ = "task_rate_starts"
    __table_args__ = (Index("ix_task_rate_starts_key", "rate_key", "counts_until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rate_key: Mapped[str] = mapped_column(ExactKey)
    counts_until: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


class TaskSchedule(Base):
    """A recurring task's last slot: a slot is taken by moving last_slot forward, so each
    runs at most once however many schedulers look at it."""

    __tablename__ = "task_schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # the task's name
    last_slot: Mapped[dt.datetime] = mapped_column(Timestamp)  # UTC; the newest slot taken
    last_task_id: Mapped[int | None] = mapped_column(Integer)  # the task queued for it
    changed_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TaskKey(Base):
    """An idempotency key and the task it names: one row per key, so the primary key
    makes two submits with one key race-free on every database (no partial index needed)."""

    __tablename__ = "task_keys"

    key: Mapped[str] = mapped_column(ExactKey, primary_key=True)
    # None only inside the transaction that is submitting the key's task.
    task_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # of the submit: a different one is refused
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class TaskTotal(Base):
    """Finished tasks per name and status, rolled up to TaskRollup.rolled_until.

    Counting a million rows at every look is slow; these few rows
    plus the tasks finished since the roll-up give the same number at once.
    """

    __tablename__ = "task_totals"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class TaskMinute(Base):
    """Finished tasks per minute and status, rolled up; kept for the last two hours."""

    __tablename__ = "task_minutes"

    minute: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


@event.listens_for(Task.__table__, "after_create")
def _create_queued_notice(table, connection, **kwargs):
    """Where the database can tell other hosts of queued tasks, it does from now on (the
    migration does the same)."""
    dialect_of(connection).create_queued_notice(connection)


class TaskRollup(Base):
    """The one row that says how far the totals reach; its lock lets one process maintain them."""

    __tablename__ = "task_rollup"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rolled_until: Mapped[dt.datetime] = mapped_column(Timestamp)


@event.listens_for(TaskRollup.__table__, "after_create")
def _start_rollup(table, connection, **kwargs):
    """A new table starts rolling up now (the migration does the same)."""
    connection.execute(table.insert().values(id=1, rolled_until=utcnow().replace(second=0, microsecond=0)))


class RunnerRecord(Base):
    """A process that runs tasks, as it said on its last heartbeat."""

    __tablename__ = "runners"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    workers: Mapped[int] = mapped_column(Integer)
    busy: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(Timestamp)
