"""One module per schema revision, named `r<rev>_<slug>.py` (Alembic skips this file)."""
