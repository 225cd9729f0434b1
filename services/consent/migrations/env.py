"""Alembic environment of the consent service: the shared runtime migrates on the connection it hands over."""
from services.consent.storage import metadata
from services.runtime.alembic_env import run

run(metadata)
