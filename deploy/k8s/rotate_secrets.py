"""Rotate the database passwords: new ones in the secrets env file and, in the same step, inside PostgreSQL.

    python -m deploy.k8s.rotate_secrets --env-file deploy/k8s/overlays/kind/secrets.env \\
        --host 127.0.0.1 --port 15432 [--admin-user novahouse] [--database novahouse]

(`make rotate-secrets` port-forwards to the kind PostgreSQL, runs this, applies the Secret and restarts the
Deployments.) PostgreSQL keeps its roles' passwords on its volume, so a new secrets.env alone would lock every
service out. Here each role of a <SVC>_DATABASE_URL / <SVC>_MIGRATION_DATABASE_URL and the administrative role
(POSTGRES_PASSWORD) gets a fresh random password: the new file is written beside the old one first, the passwords are
changed in one transaction as the administrative role (with its current password), and only then does the new file
replace the old. Connections already open stay open; new ones need the new Secret, which the restart gives the pods.
The consent keys and the integrations' credentials are kept: they are not passwords PostgreSQL holds, and the consent
keys must outlive every redeploy.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ADMIN_KEY = "POSTGRES_PASSWORD"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if not parts.username:
        raise ValueError("a database URL without a user cannot be rotated")
    netloc = f"{parts.username}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def rotated(values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The new env values, and role -> new password for every role they name (hex: nothing to escape)."""
    new, passwords = dict(values), {}
    for key, url in values.items():
        if key.endswith("DATABASE_URL") and url:
            password = secrets.token_hex(24)
            new[key] = with_password(url, password)
            role = urlsplit(url).username
            assert role is not None  # with_password refused a URL without one
            passwords[role] = password
    return new, passwords


def write_env(path: Path, values: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in values.items())


def rotate(env_file: Path, host: str, port: int, admin_user: str, database: str) -> list[str]:
    """Rotate every password in env_file, in PostgreSQL and in the file; the roles changed."""
    values = read_env(env_file)
    if ADMIN_KEY not in values:
        raise KeyError(f"{env_file} has no {ADMIN_KEY}: the administrative role's password is needed to rotate")
    new, passwords = rotated(values)
    new[ADMIN_KEY] = secrets.token_hex(24)
    passwords[admin_user] = new[ADMIN_KEY]
    pending = env_file.with_name(env_file.name + ".new")
    write_env(pending, new)
    try:
        with psycopg.connect(host=host, port=port, user=admin_user, password=values[ADMIN_KEY], dbname=database,
                             connect_timeout=10) as conn, conn.transaction():
            for role, password in passwords.items():
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                        sql.Literal(password)))
    except BaseException:
        pending.unlink()
        raise
    pending.replace(env_file)
    return sorted(passwords)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--admin-user", default="novahouse")
    parser.add_argument("--database", default="novahouse")
    args = parser.parse_args(argv)
    try:
        roles = rotate(args.env_file, args.host, args.port, args.admin_user, args.database)
    except (psycopg.Error, KeyError, ValueError) as exc:
        print(f"rotation failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    print(f"rotated the passwords of {len(roles)} roles ({', '.join(roles)}) in PostgreSQL and {args.env_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
