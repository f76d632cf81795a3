"""The article's app, as the bench's yardstick: python -m tests.bench.article_app PORT DATABASE_URL.

Served the way the article serves it: Flask's threaded development server, the
job handed to a module-level ThreadPoolExecutor(3) that inserts the user inside
`with app.app_context()`, nothing tracked, "success" at once. Plain SQLAlchemy
stands in for Flask-SQLAlchemy (a scoped session removed with the app context),
which does the same work per job with less code around it; the article's
SQLALCHEMY_ECHO is off, so the yardstick is, if anything, faster than the
article. On SQLite (the article uses MySQL only) its connections get WAL and a
busy timeout, as any SQLite app under concurrent writers needs.
"""
import concurrent.futures
import logging
import sys

from flask import Flask
from sqlalchemy import create_engine, event
from sqlalchemy.orm import scoped_session, sessionmaker

from db.models import User


def make_app(url):
    """The article's app on url: the route, the pool of 3, the session removed per context."""
    app = Flask("article")
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA journal_mode=WAL"))
    session = scoped_session(sessionmaker(engine))
    pool = concurrent.futures.ThreadPoolExecutor(3)
    app.teardown_appcontext(lambda exc: session.remove())

    def job():
        with app.app_context():
            session.add(User(name="thread pool", age=12))
            session.commit()

    @app.route("/user/thread_pool")
    def thread_pool():
        pool.submit(job)  # its future is never read: a failure vanishes, as in the article
        return "success"

    return app


def main(port, url):
    logging.basicConfig(level=logging.INFO)  # the development server logs every request
    make_app(url).run(host="127.0.0.1", port=int(port), threaded=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
