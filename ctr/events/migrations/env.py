"""Alembic environment: runs migrations on the connection handed over by ``EventStore``."""

from __future__ import annotations

from alembic import context

from ctr.events.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ctr.events.store.EventStore.migrate()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
