"""The expand/contract rule (docs/migrations.md) over every service's Alembic revisions; `make lint` runs it.

    python -m services.runtime.migration_lint [ROOT]   # exit 1 and one line per finding

Every revision says whether the previous release runs on the schema it leaves (`previous_release_compatible =
True` or `False`, a literal). One that says True may only expand in upgrade(): no table or column dropped or
renamed, no column's type changed (a String may be widened, its existing_type given) or made NOT NULL, no NOT NULL
column added without a server default (the previous release inserts rows without it), no unique or check
constraint added (its rows may break it), and no raw SQL that drops, renames or alters.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER = "previous_release_compatible"
DESTRUCTIVE_OPS = {
    "drop_table": "drops a table", "drop_column": "drops a column", "rename_table": "renames a table",
    "create_unique_constraint": "adds a unique constraint", "create_check_constraint": "adds a check constraint",
    "drop_table_comment": None, "drop_index": None,
}
DESTRUCTIVE_SQL = re.compile(r"\b(DROP\s+(TABLE|COLUMN|SCHEMA)|RENAME|ALTER\s+COLUMN\b.*\b(TYPE|SET\s+NOT\s+NULL))\b",
                             re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _column_not_null_without_default(call: ast.Call) -> bool:
    """op.add_column(table, sa.Column(..., nullable=False)) with no server_default."""
    column = next((a for a in call.args[1:] if isinstance(a, ast.Call)), None)
    if column is None:
        return False
    return _is_false(_keyword(column, "nullable")) and _keyword(column, "server_default") is None


def _string_length(node: ast.expr | None) -> int | None:
    """N of sa.String(N) / String(N)."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
            isinstance(node.func, ast.Attribute | ast.Name) and \
            (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "String":
        value = node.args[0].value
        return value if isinstance(value, int) else None
    return None


def _widens(call: ast.Call) -> bool:
    """A String column made longer: every value the previous release writes still fits."""
    new, old = _string_length(_keyword(call, "type_")), _string_length(_keyword(call, "existing_type"))
    return new is not None and old is not None and new > old


def _expand_violations(upgrade: ast.FunctionDef) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if DESTRUCTIVE_OPS.get(name):
            found.append((node.lineno, f"op.{name} {DESTRUCTIVE_OPS[name]}"))
        elif name == "add_column" and _column_not_null_without_default(node):
            found.append((node.lineno, "adds a NOT NULL column without a server_default"))
        elif name == "alter_column":
            if _keyword(node, "new_column_name") is not None:
                found.append((node.lineno, "op.alter_column renames a column"))
            if _keyword(node, "type_") is not None and not _widens(node):
                found.append((node.lineno, "op.alter_column changes a column's type (other than widening a "
                                           "String with its existing_type given)"))
            if _is_false(_keyword(node, "nullable")):
                found.append((node.lineno, "op.alter_column makes a column NOT NULL"))
        elif name == "execute":
            sql = " ".join(n.value for arg in node.args for n in ast.walk(arg)
                           if isinstance(n, ast.Constant) and isinstance(n.value, str))
            if DESTRUCTIVE_SQL.search(sql):
                found.append((node.lineno, "raw SQL that drops, renames or alters a column"))
    return found


def lint_revision(path: Path, shown: str) -> list[Finding]:
    tree = ast.parse(path.read_text(), filename=str(path))
    marker = next((node for node in tree.body if isinstance(node, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == MARKER for t in node.targets)), None)
    if marker is None or not isinstance(marker.value, ast.Constant) or not isinstance(marker.value.value, bool):
        return [Finding(shown, marker.lineno if marker else 1,
                        f"no `{MARKER} = True|False`: say whether the previous release runs on this schema "
                        "(docs/migrations.md)")]
    if marker.value.value is False:
        return []
    upgrade = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"), None)
    if upgrade is None:
        return [Finding(shown, 1, "no upgrade()")]
    return [Finding(shown, line, f"{what}, yet {MARKER} = True: split it into an expand now and a contract one "
                                 "release later (docs/migrations.md)")
            for line, what in _expand_violations(upgrade)]


def revision_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*/migrations/versions/*.py") if p.name != "__init__.py")


def lint(root: Path) -> list[Finding]:
    findings = []
    for path in revision_files(root):
        findings += lint_revision(path, str(path.relative_to(root)))
    return findings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    findings = lint(root)
    for finding in findings:
        print(finding)
    count = len(revision_files(root))
    print(f"{count} migrations checked, {len(findings)} finding(s)" if findings else
          f"{count} migrations follow the expand/contract rule")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
