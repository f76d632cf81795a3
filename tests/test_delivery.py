"""The table side of the Celery executor: claims by id, and what a relay publishes."""
import datetime as dt

from sqlalchemy import select, update

from db import claims, publishing, attempt_writes, queues, tasks
from db.models import Task, utcnow


def queued(session, count, **values):
    ids = [tasks.insert_task(session, "noop", {}).id for _ in range(count)]
    if values:
        session.execute(update(Task).where(Task.id.in_(ids)).values(**values))
    session.commit()
    return ids


def test_a_claim_by_ids_takes_only_queued_due_rows_and_never_one_it_already_runs(session):
    first, second, third = queued(session, 3)
    later = queued(session, 1, run_after=utcnow() + dt.timedelta(hours=1))[0]
    taken = claims.claim_delivered(session, [first, second], "host:1:a")
    session.commit()
    assert [claim.id for claim in taken] == [first, second]
    # A second delivery carrying a task this owner already runs, one new one and one not due.
    again = claims.claim_delivered(session, [second, third, later], "host:1:a")
    session.commit()
    assert [claim.id for claim in again] == [third]
    assert claims.claim_delivered(session, [first, 424242], "host:2:b") == []
    assert [claim.attempt for claim in taken + again] == [1, 1, 1]


def test_the_relay_takes_unpublished_due_rows_once_and_long_published_ones_again(session):
    now = utcnow()
    fresh = queued(session, 1, run_after=now)[0]  # its own publisher may be on it still
    stale = queued(session, 2, run_after=now - dt.timedelta(seconds=10))
    long_ago = queued(session, 1, run_after=now - dt.timedelta(minutes=5),
                      published_at=now - dt.timedelta(minutes=5))[0]
    recent = queued(session, 1, run_after=now - dt.timedelta(minutes=5), published_at=now)[0]
    not_due = queued(session, 1, run_after=now + dt.timedelta(minutes=5))[0]
    taken = publishing.take_unpublished(session, 100, republish_after=30, grace=2, now=now)
    session.commit()
    assert sorted(task_id for task_id, _ in taken) == sorted(stale + [long_ago])
    assert publishing.take_unpublished(session, 100, republish_after=30, grace=2, now=now) == []
    session.commit()
    assert {fresh, recent, not_due}.isdisjoint(task_id for task_id, _ in taken)
    # Requeued by a retry: unpublished again, so the relay publishes it when due.
    claim = claims.claim_delivered(session, [stale[0]], "host:1:a")[0]
    assert attempt_writes.start_task(session, claim, "host:1:a") == attempt_writes.STARTED
    attempt_writes.requeue_attempt(session, claim, "host:1:a", now - dt.timedelta(seconds=5), "transient")
    session.commit()
    assert publishing.take_unpublished(session, 100, 30, 2, now=now) == [(stale[0], "default")]


def test_a_paused_queue_is_neither_claimed_by_id_nor_relayed_until_it_resumes(session):
    now = utcnow()
    mail = queued(session, 2, queue="mail", run_after=now - dt.timedelta(seconds=10), published_at=now)
    other = queued(session, 1, run_after=now - dt.timedelta(seconds=10), priority=5)[0]
    queues.set_paused(session, "mail", True)
    session.commit()
    assert claims.claim_delivered(session, mail, "host:1:a") == []  # delivered while paused
    session.commit()
    assert set(session.scalars(select(Task.published_at).where(Task.id.in_(mail)))) == {None}
    assert publishing.take_unpublished(session, 100, 30, 2, now=now) == [(other, "default")]
    session.commit()
    queues.set_paused(session, "mail", False)
    session.commit()
    assert publishing.take_unpublished(session, 100, 30, 2, now=now) == [(mail[0], "mail"), (mail[1], "mail")]
    session.commit()
    assert [claim.id for claim in claims.claim_delivered(session, mail, "host:1:a")] == mail


def test_the_relay_publishes_higher_priorities_first(session):
    old = utcnow() - dt.timedelta(seconds=10)
    low, high, middle = (queued(session, 1, run_after=old, priority=p)[0] for p in (-5, 9, 0))
    assert publishing.take_unpublished(session, 2, 30, 2) == [(high, "default"), (middle, "default")]
