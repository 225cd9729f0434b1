"""Shared runtime for every NovaHouse gRPC server: config, logs, server bootstrap, health, DB, Redis, metrics."""
