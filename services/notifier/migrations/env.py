"""Alembic environment of the notifier: the runtime hands over the connection."""
from services.notifier.storage import Base
from services.runtime.alembic_env import run

run(Base.metadata)
