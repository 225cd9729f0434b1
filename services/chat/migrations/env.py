"""Alembic environment of the chat service: the shared runtime runs it on the chat metadata."""
from services.chat.storage import metadata
from services.runtime.alembic_env import run

run(metadata)
