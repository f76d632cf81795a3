"""Every setting, read from the environment with safe defaults."""
import contextlib
import importlib.util
import os
import zoneinfo

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from db.dialects import Dialect, dialect_for_url, preferred_drivers, supported_drivers
from db.queues import check_queue_name

DEFAULT_DATABASE_URL = "sqlite:///var/app.db"
URL_EXAMPLES = ("such as sqlite:///var/app.db, mysql+pymysql://user:password@host:3306/name "
                "or postgresql+psycopg://user:password@host:5432/name")


class ConfigError(ValueError):
    """A setting in the environment has a value that cannot be used."""


@contextlib.contextmanager
def refuse_in_one_line(doing="starting"):
    """Turn a ConfigError into one line on stderr ("not starting: why") and exit status 1.

    Every entry point (gunicorn_conf, the worker, alembic's env.py) goes through
    this, so a bad setting reads the same everywhere and never as a traceback.
    """
    try:
        yield
    except ConfigError as error:
        raise SystemExit(f"not {doing}: {error}") from None


def _number(environ, key, default, kind=int, minimum=0, maximum=None):
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a {kind.__name__}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be at most {maximum}, got {raw!r}")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text):
    """Seconds in "90", "90s", "15m", "12h", "7d" or "2w"; ValueError if it is none of these."""
    text = str(text).strip().lower()
    unit = DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (try 90s, 15m, 12h or 7d)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite time, 0 or more, got {text!r}")
    return seconds


LONGEST_DURATION = 100 * 365 * 86400  # further back than that, a cutoff leaves the calendar


def _duration(environ, key, default):
    raw = environ.get(key) or default
    try:
        seconds = parse_duration(raw)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None
    if seconds > LONGEST_DURATION:
        raise ConfigError(f"{key} must be at most 36500d, got {raw!r}")
    return seconds


def _modules(environ, key):
    names = [name.strip() for name in (environ.get(key) or "").split(",") if name.strip()]
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"{key}: no module named {name!r} can be imported")
    return names


def _queues(environ, key):
    names = [name.strip() for name in (environ.get(key) or "").split(",") if name.strip()]
    try:
        return tuple(check_queue_name(name) for name in names) or None
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def _choice(environ, key, choices):
    raw = (environ.get(key) or choices[0]).strip().lower()
    if raw not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _time_zone(environ, key):
    name = (environ.get(key) or "UTC").strip()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{key} must be a time zone name such as UTC or Europe/Berlin, "
                          f"got {name!r}") from None


def _flag(environ, key, default=False):
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


def database_url(environ=None):
    """Return DATABASE_URL, or the default SQLite file under var/."""
    environ = os.environ if environ is None else environ
    return environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def check_database_url(url):
    """Return url if the service can run on it, else ConfigError (never echoing a password)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The text may hold a password: say what is wrong, not what it was.
        raise ConfigError(f"DATABASE_URL cannot be used: it cannot be parsed as a database URL "
                          f"({URL_EXAMPLES})") from None
    if parsed.drivername not in supported_drivers():
        raise ConfigError(f"DATABASE_URL cannot be used: {parsed.drivername} is not supported "
                          f"(supported: {', '.join(preferred_drivers())}; {URL_EXAMPLES})")
    try:
        dialect_for_url(parsed).refuse_url(parsed)
    except ValueError as error:
        raise ConfigError(f"DATABASE_URL cannot be used: {error}") from None
    return url


def available_cpus():
    """The CPUs this process may run on (its affinity, so a container's cpuset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_layout(cpus, url=DEFAULT_DATABASE_URL):
    """(web processes, request threads each, task processes, task workers each) for cpus CPUs.

    Up to 8 CPUs count. One CPU: one process serving requests with 8 threads and
    running tasks on 4. Two or more: half the processes (rounded down) run only
    tasks, 4 workers each, and the others only serve requests, so request and
    task threads never share a GIL (processes that both serve and run tasks did
    worse: gunicorn hands a keep-alive client's connections to whichever process
    accepts first, which then runs its share of tasks too). A process that only
    serves gets its database's web_threads (db.dialects).
    """
    processes = max(1, min(cpus, 8))
    if processes == 1:
        return 1, 8, 0, 4
    task_processes = processes // 2
    try:
        threads = dialect_for_url(url).web_threads
    except (ArgumentError, ValueError):  # a URL that cannot be parsed: check_database_url says so
        threads = Dialect.web_threads
    return processes - task_processes, threads, task_processes, 4


def server_processes(environ):
    """How many gunicorn workers environ asks for (web and task processes), read leniently and
    importing nothing (gunicorn_conf must know before prometheus-client is imported);
    load_config judges bad values."""
    web, _, task_processes, _ = default_layout(available_cpus())  # (threads do not count here)

    def number(key, default):
        raw = (environ.get(key) or "").strip()
        return int(raw) if raw.isdigit() else default

    executor = (environ.get("TASK_EXECUTOR") or "threads").strip().lower()
    if not _tasks_run_here(executor, number("TASK_WORKERS", 1)):
        task_processes = 0
    return number("WEB_WORKERS", web) + number("TASK_PROCESSES", task_processes)


def _layout_settings(environ):
    """The processes and threads: what the machine's default layout gives, unless set."""
    layout = default_layout(available_cpus(), database_url(environ))
    task_workers = _number(environ, "TASK_WORKERS", layout[3])
    executor = _choice(environ, "TASK_EXECUTOR", ("threads", "celery"))
    # Set by gunicorn_conf for each worker while TASK_PROCESSES > 0: it serves requests or runs tasks.
    role = _choice(environ, "PROCESS_ROLE", ("both", "web", "tasks"))
    return {
        "WEB_WORKERS": _number(environ, "WEB_WORKERS", layout[0], minimum=1),
        "WEB_THREADS": _number(environ, "WEB_THREADS", layout[1], minimum=1),
        # gunicorn processes that serve no requests and run tasks on TASK_WORKERS threads
        # each; while there are any, the WEB_WORKERS processes run none.
        "TASK_PROCESSES": _task_processes(environ, layout[2], task_workers, executor),
        "PROCESS_ROLE": role,
        "TASK_WORKERS": 0 if role == "web" else task_workers,
        # Where tasks run: threads in the web and worker processes, or Celery workers.
        "TASK_EXECUTOR": executor,
    }


def load_config(environ):
    """Return the settings dict built from environ (e.g. os.environ)."""
    origins = environ.get("CORS_ORIGINS", "")
    layout = _layout_settings(environ)
    web_threads = layout["WEB_THREADS"]
    return {
        "DATABASE_URL": check_database_url(database_url(environ)),
        "HOST": environ.get("HOST") or "127.0.0.1",
        "PORT": _number(environ, "PORT", 8000, minimum=1, maximum=65535),
        **layout,
        "TASK_MAX_QUEUED": _number(environ, "TASK_MAX_QUEUED", 10_000, minimum=1),
        "TASK_PREFETCH": _number(environ, "TASK_PREFETCH", None),
        "TASK_HEARTBEAT": _number(environ, "TASK_HEARTBEAT", 5.0, float, minimum=0.05),
        "TASK_LEASE": _number(environ, "TASK_LEASE", 30.0, float, minimum=0.1),
        "TASK_SHUTDOWN_GRACE": _number(environ, "TASK_SHUTDOWN_GRACE", 30.0, float),
        "TASK_POLL_INTERVAL": _number(environ, "TASK_POLL_INTERVAL", 0.5, float, minimum=0.01),
        "TASK_RETRY_BASE": _number(environ, "TASK_RETRY_BASE", 1.0, float),
        "TASK_RETRY_CAP": _number(environ, "TASK_RETRY_CAP", 300.0, float),
        "TASK_RETENTION": _duration(environ, "TASK_RETENTION", "7d"),
        # A finished task keeps its unique key (Idempotency-Key) this long.
        "UNIQUE_WINDOW": _duration(environ, "UNIQUE_WINDOW", "1d"),
        # Modules of your own that define tasks with @task, imported by every process.
        "TASK_MODULES": _modules(environ, "TASK_MODULES"),
        # The queues this process takes tasks from (None: every queue).
        "TASK_QUEUES": _queues(environ, "TASK_QUEUES"),
        # Whether this process queues recurring tasks' slots (@task(cron=...) or every=...).
        "SCHEDULES_ENABLED": _flag(environ, "SCHEDULES_ENABLED", True),
        # The time zone cron expressions are read in (an IANA name).
        "SCHEDULE_TZ": _time_zone(environ, "SCHEDULE_TZ"),
        # SQLite's writers take turns on a lock file (db/dialects/sqlite_turn.py): "auto" where the
        # server runs more than one process, "on" or "off" everywhere.
        "SQLITE_WRITE_TURN": _choice(environ, "SQLITE_WRITE_TURN", ("auto", "on", "off")),
        "CELERY_BROKER_URL": environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0",
        # A published id still unclaimed this long is published again (lost with a broker).
        "CELERY_REPUBLISH_AFTER": _number(environ, "CELERY_REPUBLISH_AFTER", 30.0, float, minimum=1),
        "CORS_ORIGINS": [o.strip() for o in origins.split(",") if o.strip()],
        # Access control (service.auth): tokens for the API, /metrics and the dashboard.
        "API_TOKENS": [t.strip() for t in environ.get("API_TOKENS", "").split(",") if t.strip()],
        "SECRET_KEY": environ.get("SECRET_KEY") or None,
        "ALLOW_UNAUTHENTICATED": _flag(environ, "ALLOW_UNAUTHENTICATED"),
        "ALLOW_DB_RESET": _flag(environ, "ALLOW_DB_RESET"),
        "SEED_SYNC_DELAY": _number(environ, "SEED_SYNC_DELAY", 10.0, float),
        # /user/add holds a request thread for SEED_SYNC_DELAY: a quarter of them at most,
        # and never the last one, so health checks and the API always find a thread.
        "SEED_SYNC_SLOTS": _number(environ, "SEED_SYNC_SLOTS", (web_threads + 2) // 4,
                                   maximum=web_threads - 1),
        # create_user accepts delays up to 300 s (service.jobs.MAX_DELAY)
        "SEED_TASK_DELAY": _number(environ, "SEED_TASK_DELAY", 2.0, float, maximum=300),
        "LOG_LEVEL": (environ.get("LOG_LEVEL") or "INFO").upper(),
        "LOG_FORMAT": _choice(environ, "LOG_FORMAT", ("text", "json")),
        "DEBUG": _flag(environ, "DEBUG"),
        "BENCH_MODE": _flag(environ, "BENCH_MODE"),
        # make worker serves /metrics on this port (0: not at all); the web serves it at /metrics
        "METRICS_PORT": _number(environ, "METRICS_PORT", 0, maximum=65535),
        "MAX_CONTENT_LENGTH": _number(environ, "MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1),
    }


def _task_processes(environ, default, task_workers, executor):
    """TASK_PROCESSES: the layout's number, or 0 where no task runs in this server."""
    runs_here = _tasks_run_here(executor, task_workers)
    processes = _number(environ, "TASK_PROCESSES", default if runs_here else 0, maximum=64)
    if processes and not runs_here:
        why = "TASK_EXECUTOR=celery runs tasks in Celery workers" if executor != "threads" \
            else "TASK_WORKERS is 0"
        raise ConfigError(f"TASK_PROCESSES must be 0 when {why}, got {processes}")
    return processes


def _tasks_run_here(executor, task_workers):
    """Whether the server's own processes run tasks (else Celery workers do, or none)."""
    return executor == "threads" and task_workers > 0


def write_turn(settings, processes):
    """Whether SQLite's writers take turns in a program of this many processes (SQLITE_WRITE_TURN).

    Between processes the turn pays: SQLite's busy handler sleeps 1..100 ms, and the
    lock sits free while another process's writers sleep. Within one process the
    handler is cheaper: the thread that holds the lock writes again before the
    sleepers wake, where a turn hands every commit to another thread.
    """
    choice = settings["SQLITE_WRITE_TURN"]
    return choice == "on" or (choice == "auto" and processes > 1)
