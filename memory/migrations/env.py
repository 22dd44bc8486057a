"""Alembic environment of the store; configured in code by `memory.migrate.alembic_config`.

At run time `Store.open` hands in its own connection (already inside a transaction) through
`config.attributes["connection"]`. By hand, the same environment works on a URL; to add a
revision after changing `memory/schema.py`::

    from alembic import command
    from memory.migrate import alembic_config

    config = alembic_config("sqlite:////tmp/scratch.db")
    command.upgrade(config, "head")  # autogenerate compares against a current database
    command.revision(config, "what changed", rev_id="0002", autogenerate=True)

then review the new `versions/r0002_what_changed.py` (autogenerate is a draft, not a verdict).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from memory.engine import WRITE, create_store_engine
from memory.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER via table copies
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError(
            "set sqlalchemy.url (memory.migrate.alembic_config(url)) or pass a connection"
        )
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection, connection.execution_options(**WRITE).begin():
            _run(connection)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
