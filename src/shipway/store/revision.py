"""The schema revision this version of Shipway expects; a test pins it to the newest Alembic script.

It has a module of its own so that the standard-library read path (``Store.sqlite_reader``) can
check it without importing SQLAlchemy, which :mod:`shipway.store.schema` needs.
"""

SCHEMA_REVISION = "0005"
