"""SQLite's query plans of the statements a piece of work sends."""
from sqlalchemy import event


def sqlite_plans(engine, work, kinds=("SELECT",)):
    """[(statement, [plan step, ...])] of every statement of these kinds that work() sends to SQLite."""
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(kinds):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as connection:
        return [(statement, [row[3] for row in connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, parameters).all()]) for statement, parameters in sent]
