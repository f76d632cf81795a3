"""Run migrations against DATABASE_URL (or a URL a caller set on the config)."""
import warnings
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from db.dialects import dialect_for_url
from db.models import Base
from service.config import check_database_url, database_url, refuse_in_one_line

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def url():
    """The URL set by a caller (tests) or else the service's DATABASE_URL, checked as the
    service checks it (a bad one is one line, not a driver's traceback)."""
    with refuse_in_one_line("migrating"):
        return check_database_url(config.get_main_option("sqlalchemy.url") or database_url())


def include_object(obj, name, type_, reflected, compare_to):
    """Compare only what the models make on this database (db.dialects.with_partial_indexes), and
    leave out what alembic cannot compare (info compare=False: its test checks it)."""
    if type_ != "index":
        return True
    model = obj if not reflected else compare_to
    if model is not None and model.info.get("compare") is False:
        return False
    if reflected and compare_to is None and name in _uncompared():
        return False
    dialect = context.get_context().dialect.name
    return dialect in obj.info.get("dialects", (dialect,))


def _hush_other_databases_indexes(dialect):
    """Alembic warns that it cannot compare an expression index the database lacks: one the
    models make only elsewhere (db.dialects.only_where) is meant to be missing here."""
    for table in target_metadata.tables.values():
        for index in table.indexes:
            if dialect not in index.info.get("dialects", (dialect,)):
                warnings.filterwarnings("ignore", message=f"autogenerate skipping .* index '{index.name}'")


def _uncompared():
    return {ix.name for table in target_metadata.tables.values() for ix in table.indexes
            if ix.info.get("compare") is False}


def run_migrations_offline():
    context.configure(url=url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    from sqlalchemy.engine import make_url

    target = make_url(url())
    dialect = dialect_for_url(target)
    dialect.prepare(target)
    engine = create_engine(target, poolclass=pool.NullPool)
    # Processes that migrate at once (make run and make worker each do) take turns: the
    # lock is taken before alembic reads the version, so a later one finds head and stops.
    _hush_other_databases_indexes(engine.dialect.name)
    with engine.connect() as connection, dialect.migration_lock(connection):
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
