"""Each service's two PostgreSQL roles, made with an administrative connection: `make up` and the tests use them.

The migration role (`<name>_migrator`) owns the service's schema and everything in it and is used only by
migrations (MIGRATION_DATABASE_URL); the service role (`<name>`) owns nothing and gets, from each migration, only
the privileges services/runtime/migrate.py grants it (DATABASE_URL). Kubernetes makes the same roles in its
PostgreSQL init script (deploy/k8s/overlays/kind/postgres.yaml).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class ServiceRoles:
    service: str
    schema: str
    role: str
    migrator: str
    password: str  # the service role's
    migrator_password: str

    @classmethod
    def named(cls, service: str, name: str, schema: str) -> ServiceRoles:
        """Roles `name` and `name_migrator` with fresh passwords (ignored where the server trusts local users)."""
        return cls(service, schema, name, f"{name}_migrator", secrets.token_hex(24), secrets.token_hex(24))

    def env(self, admin_url: str) -> dict[str, str]:
        """The service's database settings: its own role, the migration role, its schema."""
        return {
            "DATABASE_URL": url_as(admin_url, self.role, self.password),
            "MIGRATION_DATABASE_URL": url_as(admin_url, self.migrator, self.migrator_password),
            "DB_SCHEMA": self.schema,
        }


def url_as(url: str, user: str, password: str) -> str:
    """url with its user and password replaced: same server, database and options."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def create(conn: psycopg.Connection, roles: ServiceRoles) -> None:
    """Create (or, when they exist, refresh the passwords of) both roles, and give the migration role the schema
    and whatever an earlier run left in it owned by someone else. Idempotent; conn must be in autocommit."""
    for role, password in ((roles.migrator, roles.migrator_password), (roles.role, roles.password)):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}").format(
            verb, sql.Identifier(role), sql.Literal(password)))
    for role in (roles.migrator, roles.role):
        # Only where PUBLIC lost CONNECT: a GRANT rewrites the database's catalogue row, and two sessions doing it
        # at once (tests in parallel) fail with "tuple concurrently updated".
        can_connect = conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (role,))
        if can_connect.fetchone() != (True,):
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(_current_database(conn)), sql.Identifier(role)))
    schema, migrator = sql.Identifier(roles.schema), sql.Identifier(roles.migrator)
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (roles.schema,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, migrator))
        return
    with conn.transaction():
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, migrator))
        for statement in _foreign_owned(conn, roles):
            conn.execute(statement)


def _current_database(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def _foreign_owned(conn: psycopg.Connection, roles: ServiceRoles) -> list[sql.Composed]:
    """ALTER ... OWNER TO the migration role for each table, view, sequence and function of the schema it does not
    own (the schema of a stack that ran before the roles existed, or was migrated with the admin's URL)."""
    relations = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND pg_get_userbyid(c.relowner) <> %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))",
        (roles.schema, roles.migrator)).fetchall()
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND pg_get_userbyid(p.proowner) <> %s", (roles.schema, roles.migrator)).fetchall()
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    migrator = sql.Identifier(roles.migrator)
    statements = [sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kinds[kind]),
                                                           sql.Identifier(roles.schema, name), migrator)
                  for name, kind in relations]
    # regprocedure's text is quoted and, the schema being off the admin's search path, schema-qualified
    statements += [sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(signature), migrator)
                   for (signature,) in functions]
    return statements


def drop(conn: psycopg.Connection, roles: ServiceRoles) -> None:
    """Remove both roles and all they own (the schema with its tables) or were granted, in this database; the
    caller runs it in every database the roles were used in. Missing roles are skipped."""
    for role in (roles.role, roles.migrator):
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            continue
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def local_roles(admin_url: str, prefix: str | None = None,
                services: tuple[str, ...] = ("consent", "notifier", "chat")) -> dict[str, ServiceRoles]:
    """`make up` on PostgreSQL: each service's roles, made (idempotently) with the administrative admin_url.

    Roles `novahouse_<svc>` and `novahouse_<svc>_migrator` on the schemas `<svc>`; with a prefix (a second stack on
    the same database), roles `<prefix>_<svc>[_migrator]` on schemas `<prefix>_<svc>`. The passwords are new on
    every start, so none is stored anywhere."""
    roles = {svc: ServiceRoles.named(svc, f"{prefix or 'novahouse'}_{svc}", f"{prefix}_{svc}" if prefix else svc)
             for svc in services}
    with psycopg.connect(psycopg_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        for svc_roles in roles.values():
            create(conn, svc_roles)
    return roles


def psycopg_url(url: str) -> str:
    """A DATABASE_URL as libpq reads it (SQLAlchemy's driver suffix removed)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"
