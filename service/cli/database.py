"""The database a command works on: bound, checked for its tables, disposed after."""
import contextlib

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from db import dispose_engine, get_engine, tasks
from db.dialects import dialect_of
from db.models import MAX_ID, Base
from service.cli.errors import CommandError
from service import startup
from service.config import ConfigError

COMMAND_CONNECTIONS = 2
MIGRATE = "run the migrations (make migrate, or alembic upgrade head)"


def read_settings():
    """The settings from the environment, or a one-line error."""
    try:
        return startup.settings_from_environment()
    except ConfigError as error:
        raise CommandError(error) from None


def reason(error):
    """What the driver said, without SQL or SQLAlchemy's background link."""
    return str(getattr(error, "orig", None) or error)


@contextlib.contextmanager
def connected():
    """Bind DATABASE_URL, check that it is migrated, yield the settings; dispose the engine after."""
    settings = read_settings()
    where = make_url(settings["DATABASE_URL"]).render_as_string(hide_password=True)
    try:
        # A command writes a few rows beside a server: taking turns is not worth it.
        startup.start(settings, threads=COMMAND_CONNECTIONS, writers=1)
    except ConfigError as error:
        raise CommandError(error) from None
    try:
        require_migrated(get_engine(), where)
        yield settings
    except DBAPIError as error:
        raise CommandError(f"database error on {where}: {reason(error)}") from None
    finally:
        dispose_engine()


def require_migrated(engine, where):
    """Refuse a database that cannot be reached or lacks tables, before any command reads it."""
    missing = dialect_of(engine).missing_database(engine.url)
    if missing:
        raise CommandError(f"{missing}: {MIGRATE}")
    try:
        connection = engine.connect()
    except DBAPIError as error:
        raise CommandError(f"cannot reach the database {where}: {reason(error)}") from None
    with connection:
        missing = sorted(set(Base.metadata.tables) - set(inspect(connection).get_table_names()))
    if len(missing) == len(Base.metadata.tables):
        raise CommandError(f"the database {where} was never migrated: {MIGRATE}")
    if missing:
        raise CommandError(f"the database {where} lacks the tables {', '.join(missing)}: {MIGRATE}")


def find_task(session, task_id):
    """The task with this id, or a one-line 'not found' (ids beyond both databases' range included)."""
    task = tasks.get_task(session, task_id) if 1 <= task_id <= MAX_ID else None
    if task is None:
        raise CommandError(f"task {task_id} not found")
    return task
