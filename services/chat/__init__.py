"""The chat service: conversations that turn visitors into leads, idempotent follow-ups, a self-cleaning cache."""
