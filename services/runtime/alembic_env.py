"""The body of every service's alembic env.py: migrate on the connection the runtime hands over."""
from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine


def run(target_metadata: MetaData) -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        # Plain `alembic` command line: connect with the URL from the config.
        url = context.config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("alembic.ini has no sqlalchemy.url and no connection was handed over")
        engine = create_engine(url)
        with engine.begin() as connection:
            _migrate(connection, target_metadata)
        return
    _migrate(connection, target_metadata)


def _migrate(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
