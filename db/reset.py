"""Empty every table, keeping the schema at its current migration."""
from sqlalchemy import delete, text

from db import stats
from db.models import Task, User


def reset_database_and_commit(session):
    """Delete every task and user, and the counts of tasks, commit, and restart the ids at 1."""
    stats.reset_counts(session)
    session.execute(delete(Task))
    session.execute(delete(User))
    session.commit()
    # SQLite reuses rowids once a table is empty; MySQL must be told (ALTER commits).
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        for table in (Task.__table__, User.__table__):
            session.execute(text(f"ALTER TABLE {table.name} AUTO_INCREMENT = 1"))
        session.commit()
