"""Running the Alembic migrations in `memory/migrations/` from code (no alembic.ini).

`upgrade(connection, location)` brings a database to the newest revision this code knows and
refuses (`StoreVersionTooNew`) a database stamped with a revision it does not know. It runs in
the caller's transaction, so on SQLite two processes opening the same new file at once do not
both create the tables: the second waits for the first and then finds the schema current.

To work on the schema by hand, build a configuration with `alembic_config(url)` and call
`alembic.command` (see `memory/migrations/env.py` for an example).
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from memory.errors import StoreVersionTooNew

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic configuration for the store's migrations, against `connection` or `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision the shipped migrations define."""
    return frozenset(script.revision for script in _script().walk_revisions())


@functools.cache
def head_revision() -> str:
    """The newest revision: what a store opened by this code is migrated to."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships at least one revision
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the database is stamped with (empty for a database never migrated)."""
    return MigrationContext.configure(connection).get_current_heads()


def upgrade(connection: Connection, location: str) -> None:
    """Migrate the database behind `connection` to `head_revision()`, inside its transaction."""
    current = current_revisions(connection)
    unknown = [revision for revision in current if revision not in known_revisions()]
    if unknown:
        raise StoreVersionTooNew(location, revision=unknown[0], known_head=head_revision())
    if current == (head_revision(),):
        return
    command.upgrade(alembic_config(connection=connection), "head")
