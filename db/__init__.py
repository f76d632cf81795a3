"""Everything that touches the database. Imports no Flask."""
from db.session import (HeldConnection, Session, dispose_engine, get_engine, init_engine,
                        listen_for_queued, session_scope, warm_pool)

__all__ = ["HeldConnection", "Session", "dispose_engine", "get_engine", "init_engine", "listen_for_queued",
           "session_scope", "warm_pool"]
