"""Rotating the secrets changes the database passwords inside PostgreSQL too (issue 17, part 3): on a PostgreSQL of
the test's own with password authentication (scram-sha-256), made like the kind one (an administrative role and each
service's two roles from the URLs in secrets.env), every role logs in with its new password and no longer with the
old one; the other secrets are kept."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from deploy.k8s import kind_secrets, rotate_secrets
from testsupport.private_postgres import PrivatePostgres

REPO = Path(__file__).resolve().parents[2]
ADMIN = "novahouse"


class PasswordPostgres(PrivatePostgres):
    """A private server that asks every role for its password (the shared one trusts everyone)."""

    def __init__(self, superuser_password: str):
        super().__init__()
        self.superuser_password = superuser_password

    def create(self) -> PasswordPostgres:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self.start()
        return self

    def login(self, user: str, password: str, database: str = ADMIN) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=database,
                                 connect_timeout=5) as conn:
                return conn.execute("SELECT current_user").fetchone() == (user,)
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), exc
            return False


def roles_of(values: dict[str, str]) -> dict[str, str]:
    """Role -> password of every database URL, plus the administrative role."""
    found = {ADMIN: values["POSTGRES_PASSWORD"]}
    for key, url in values.items():
        if key.endswith("DATABASE_URL"):
            parts = urlsplit(url)
            found[str(parts.username)] = str(parts.password)
    return found


@pytest.fixture
def kind_like(tmp_path):
    """(the server, the secrets.env path) with the kind cluster's roles made from the file's values."""
    env_file = tmp_path / "secrets.env"
    assert kind_secrets.main(["--output", str(env_file)]) == 0
    values = rotate_secrets.read_env(env_file)
    with PasswordPostgres(superuser_password="superuser-pw") as pg:
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", password="superuser-pw",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(ADMIN), sql.Literal(values["POSTGRES_PASSWORD"])))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(ADMIN), sql.Identifier(ADMIN)))
            for role, password in roles_of(values).items():
                if role != ADMIN:
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)))
        yield pg, env_file


def test_rotation_changes_every_database_password_in_postgresql_and_in_the_secrets_file(kind_like):
    pg, env_file = kind_like
    before = rotate_secrets.read_env(env_file)
    old = roles_of(before)
    assert len(old) == 7 and all(pg.login(role, password) for role, password in old.items())

    result = subprocess.run([sys.executable, "-m", "deploy.k8s.rotate_secrets", "--env-file", str(env_file),
                             "--port", str(pg.port)], cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "rotated the passwords of 7 roles" in result.stdout
    after = rotate_secrets.read_env(env_file)
    new = roles_of(after)
    assert set(new) == set(old)
    for role in old:
        assert new[role] != old[role]
        assert pg.login(role, new[role]), role
        assert not pg.login(role, old[role]), role
    # the URLs keep their user, host and database; everything else in the file is kept as it was
    for key in before:
        if key.endswith("DATABASE_URL"):
            assert urlsplit(after[key])._replace(netloc="") == urlsplit(before[key])._replace(netloc="")
            assert urlsplit(after[key]).hostname == "postgres"
        elif key != "POSTGRES_PASSWORD":
            assert after[key] == before[key], key
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert not env_file.with_name("secrets.env.new").exists()


def test_a_rotation_postgresql_refuses_changes_nothing(kind_like):
    pg, env_file = kind_like
    before = env_file.read_text()
    values = rotate_secrets.read_env(env_file)
    env_file.write_text(before.replace(f"POSTGRES_PASSWORD={values['POSTGRES_PASSWORD']}", "POSTGRES_PASSWORD=wrong"))

    code = rotate_secrets.main(["--env-file", str(env_file), "--port", str(pg.port)])

    assert code == 1
    assert "POSTGRES_PASSWORD=wrong" in env_file.read_text()
    assert all(pg.login(role, password) for role, password in roles_of(values).items() if role != ADMIN)
