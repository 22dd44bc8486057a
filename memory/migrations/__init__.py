"""Alembic migrations of the store's schema; `memory.migrate` runs them when a store opens."""
