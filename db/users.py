"""Data functions for users; each takes a session and none commits."""
from sqlalchemy import func, select

from db.models import User


def create_user(session, name, age):
    """Add a user and flush so its id is known."""
    user = User(name=name, age=age)
    session.add(user)
    session.flush()
    return user


def get_user(session, user_id):
    """Return the user with this id, or None."""
    return session.get(User, user_id)


def list_users(session, limit, offset):
    """Return (one page of users by id, total count)."""
    total = session.scalar(select(func.count()).select_from(User))
    page = session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)).all()
    return page, total
