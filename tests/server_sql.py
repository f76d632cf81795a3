"""What the fault tests ask of a database server, in each server's own SQL."""
from sqlalchemy import text


def server_connection_id(dbapi_connection):
    """The server's id of a driver's connection: MariaDB's thread id, PostgreSQL's backend pid."""
    info = getattr(dbapi_connection, "info", None)
    return info.backend_pid if hasattr(info, "backend_pid") else dbapi_connection.thread_id()


def kill_connection_sql(dialect_name, connection_id):
    """The statement that makes the server cut a connection off, as a restart would."""
    if dialect_name == "postgresql":
        return text(f"SELECT pg_terminate_backend({int(connection_id)})")
    return text(f"KILL CONNECTION {int(connection_id)}")


def own_connection_id_sql(dialect_name):
    """The statement that reads this connection's server id."""
    return text("SELECT pg_backend_pid()" if dialect_name == "postgresql" else "SELECT CONNECTION_ID()")


def other_connection_ids_sql(dialect_name):
    """The statement that lists the server ids of every other connection to this database."""
    if dialect_name == "postgresql":
        return text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
    return text("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()")
