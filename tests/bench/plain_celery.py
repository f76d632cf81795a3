"""Plain Celery as Flask apps commonly run it, for `make bench EXECUTOR=celery` to race.

Redis as broker and result backend, acks_late, a scoped_session removed on
task_postrun, the task's insert committed by the task itself; no row records
the task, so nothing claims it either. Its worker:
celery -A tests.bench.plain_celery worker -Q plain -P threads -c 4.
"""
import os

from celery import Celery, signals
from sqlalchemy.orm import scoped_session, sessionmaker

import db
from db.models import User

app = Celery("plain", broker=os.environ.get("PLAIN_BROKER", "redis://127.0.0.1:6379/10"),
             backend=os.environ.get("PLAIN_BACKEND", "redis://127.0.0.1:6379/11"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue="plain")

# The engine settings the service and the ORM floor use (WAL and busy timeout on SQLite, ...):
# the race is about how tasks are carried and run, not how the database is tuned.
engine = db.init_engine(os.environ.get("DATABASE_URL", "sqlite:///var/bench/bench.db"), pool_size=8)
Session = scoped_session(sessionmaker(bind=engine))


@app.task(name="plain.create_user")
def create_user(name, age):
    """Insert a user and return its id (stored in the result backend)."""
    user = User(name=name, age=age)
    Session.add(user)
    Session.commit()
    return user.id


@signals.task_postrun.connect
def remove_session(**kwargs):
    Session.remove()
