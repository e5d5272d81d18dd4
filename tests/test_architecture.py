"""Keeps docs/ARCHITECTURE.md's import rules true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mabapi"
WEB = {"fastapi", "starlette", "uvicorn", "httpx"}
DATABASE = {"sqlalchemy", "alembic", "asyncpg", "aiosqlite"}
# Rule 5: the only modules that may import the web framework.
WEB_MODULES = {"app.py", "deps.py", "handlers.py", "middleware.py", "hot_paths.py", "routes.py"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """Top-level names imported by a module, plus `mabapi.<sub>` for internal imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [node.module]
        else:
            continue
        for name in found:
            parts = name.split(".")
            names.add(".".join(parts[:2]) if parts[0] == "mabapi" else parts[0])
    return names


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


class TestImportRules:
    def test_there_is_something_to_check(self) -> None:
        assert any(relative(p).startswith("stats/") for p in modules())
        assert any(p.name == "routes.py" for p in modules())

    @pytest.mark.parametrize("path", [p for p in modules() if relative(p).startswith("stats/")])
    def test_stats_is_a_pure_leaf(self, path: Path) -> None:
        allowed_third_party = {"numpy", "scipy"}
        for name in imported_roots(path):
            if name.startswith("mabapi"):
                assert name == "mabapi.stats", f"{relative(path)} imports {name}"
            else:
                assert name not in WEB | DATABASE | {"pydantic"}, f"{relative(path)}: {name}"
                assert name in allowed_third_party or name in _stdlib(), (
                    f"{relative(path)} imports {name}"
                )

    @pytest.mark.parametrize(
        "path", [p for p in modules() if relative(p).startswith("simulation/")] or [None]
    )
    def test_simulation_uses_stats_only(self, path: Path | None) -> None:
        if path is None:
            assert not (PACKAGE / "simulation").exists()
            return
        for name in imported_roots(path):
            if name.startswith("mabapi"):
                assert name in {"mabapi.stats", "mabapi.simulation"}, relative(path)
            assert name not in WEB | DATABASE, f"{relative(path)} imports {name}"

    @pytest.mark.parametrize("path", modules(), ids=relative)
    def test_only_the_web_layer_imports_fastapi(self, path: Path) -> None:
        in_web_layer = path.name in WEB_MODULES or relative(path).startswith("dashboard/")
        if not in_web_layer:
            assert not imported_roots(path) & {"fastapi", "starlette"}, relative(path)

    @pytest.mark.parametrize("path", [p for p in modules() if p.name == "routes.py"], ids=relative)
    def test_routes_hold_no_sql(self, path: Path) -> None:
        names = imported_roots(path)
        assert not names & DATABASE, f"{relative(path)} imports {names & DATABASE}"
        source = path.read_text()
        assert "repository" not in source, f"{relative(path)} reaches the repository"

    @pytest.mark.parametrize("path", modules(), ids=relative)
    def test_nothing_but_settings_reads_the_environment(self, path: Path) -> None:
        if path.name == "settings.py":
            return
        source = path.read_text()
        assert "os.environ.get" not in source, relative(path)
        assert "os.getenv" not in source, relative(path)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


class TestDashboard:
    @pytest.mark.parametrize(
        "path", [p for p in modules() if relative(p).startswith("dashboard/")], ids=relative
    )
    def test_dashboard_reads_through_services_only(self, path: Path) -> None:
        names = imported_roots(path)
        assert not names & DATABASE, f"{relative(path)} imports {names & DATABASE}"
        assert not any(n.endswith("repository") for n in names), relative(path)
        assert "repository" not in path.read_text(), relative(path)


class TestSelfContained:
    """The repository documents itself: nothing in it points outside it."""

    ROOT = PACKAGE.parents[1]
    OUTSIDE = re.compile(r"\.\./shared|shared/(ARCHITECTURE|STATISTICS)|\b[Ii]ssues? #?\d")

    def test_no_file_refers_outside_the_repository(self) -> None:
        roots = ["README.md", "docs", "src", "tests", "benchmarks", "deploy", ".ci", "Makefile"]
        offenders = []
        for root in roots:
            base = self.ROOT / root
            for path in [base] if base.is_file() else sorted(base.rglob("*")):
                if not path.is_file() or "vendor" in path.parts or path.suffix == ".pyc":
                    continue
                text = path.read_text(errors="ignore")
                if path == Path(__file__):
                    text = text.replace(self.OUTSIDE.pattern, "")
                offenders += [f"{path}: {m.group(0)}" for m in self.OUTSIDE.finditer(text)]
        assert offenders == []

    def test_the_documents_the_code_cites_exist(self) -> None:
        for name in ("ARCHITECTURE.md", "STATISTICS.md", "OPERATIONS.md", "SECURITY.md"):
            assert (self.ROOT / "docs" / name).stat().st_size > 1000, name


# Modules that gather every package on purpose: the dashboard (web), and the table
# registry and migrations Alembic reads.
AGGREGATORS = ("dashboard/", "db/models.py", "db/migrations/")


class TestPackageCycles:
    """No import cycle between packages of src/mabapi (the web layer, which assembles
    them, aside): a package can be read from the bottom up."""

    @staticmethod
    def graph() -> dict[str, set[str]]:
        edges: dict[str, set[str]] = {}
        for path in modules():
            if path.name in WEB_MODULES or relative(path).startswith(AGGREGATORS):
                continue
            parts = relative(path).split("/")
            if len(parts) < 2:
                continue  # top-level modules (settings, errors, ...) are not packages
            source = parts[0]
            for name in imported_roots(path):
                if name.startswith("mabapi."):
                    target = name.split(".")[1]
                    if target != source and (PACKAGE / target).is_dir():
                        edges.setdefault(source, set()).add(target)
        return edges

    def test_no_cycle(self) -> None:
        edges = self.graph()
        cycles = []

        def visit(node: str, trail: list[str]) -> None:
            for nxt in sorted(edges.get(node, ())):
                if nxt in trail:
                    cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
                elif len(trail) < 10:
                    visit(nxt, [*trail, nxt])

        for start in sorted(edges):
            visit(start, [start])
        assert sorted(set(cycles)) == []


class TestTransactionOwners:
    """Three places begin and commit transactions, and no fourth: the request session
    (deps.py), the group commit (db/group_commit.py) and the helper for background work
    (db/transactions.py); plus the schema's own (db/migrate.py, Alembic's env.py)."""

    OWNERS = frozenset({"deps.py", "db/group_commit.py", "db/transactions.py"})
    SCHEMA = frozenset({"db/migrate.py", "db/migrations/env.py"})
    BEGINS = re.compile(r"\.(begin|commit|begin_nested)\(")

    def test_no_fourth_owner(self) -> None:
        found = sorted(
            relative(path)
            for path in modules()
            if self.BEGINS.search(path.read_text())
            and relative(path) not in self.OWNERS | self.SCHEMA
        )
        assert found == []

    def test_the_owners_are_there(self) -> None:
        for owner in self.OWNERS:
            assert self.BEGINS.search((PACKAGE / owner).read_text()), owner


class TestPackageOrder:
    """The packages of src/mabapi in one order, bottom up: a module may import from its
    own package and from packages listed before it, never after (the web layer, which
    assembles them, and the table registry aside). docs/ARCHITECTURE.md lists the same."""

    ORDER = (
        "stats", "simulation", "db", "access", "counts", "webhooks", "experiments",
        "guardrails", "metrics", "allocations", "reports", "evaluation", "assignments", "ofrep",
        "health", "dashboard",
    )  # fmt: skip

    def test_every_package_is_placed(self) -> None:
        packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
        assert packages == set(self.ORDER)

    def test_no_import_points_up(self) -> None:
        rank = {name: i for i, name in enumerate(self.ORDER)}
        upward = sorted(
            f"{source} imports {target}"
            for source, targets in TestPackageCycles.graph().items()
            for target in targets
            if rank[target] > rank[source]
        )
        assert upward == []

    def test_the_document_lists_the_same_order(self) -> None:
        text = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
        assert " < ".join(f"`{name}`" for name in self.ORDER) in text


class TestSize:
    """No module over 500 lines; no top-level package over 15% of src/mabapi's lines."""

    @staticmethod
    def lines(path: Path) -> int:
        return len(path.read_text().splitlines())

    @pytest.mark.parametrize("path", modules(), ids=relative)
    def test_module_size(self, path: Path) -> None:
        if relative(path).startswith("db/migrations/versions/"):
            return  # a migration is a frozen record, not code anyone extends
        assert self.lines(path) <= 500, relative(path)

    def test_package_share(self) -> None:
        total = sum(self.lines(p) for p in modules())
        shares: dict[str, int] = {}
        for path in modules():
            parts = relative(path).split("/")
            if len(parts) > 1:
                shares[parts[0]] = shares.get(parts[0], 0) + self.lines(path)
        assert {k: round(v / total, 3) for k, v in shares.items() if v > 0.15 * total} == {}


class TestSqlInRepositories:
    """Every SQL statement lives in a repository (`repository.py`, or `*_repository.py`),
    the table declarations (`models.py`) or `db/`: elsewhere, a module may hold a session
    (its type) and pass it on, never build or run a statement."""

    SESSION_ONLY = frozenset({"sqlalchemy.ext.asyncio", "sqlalchemy.exc", "sqlalchemy.engine"})
    RUNS = re.compile(r"\bsession\.(execute|scalar|scalars|stream|get|add|add_all|delete)\(")

    @staticmethod
    def is_store(path: Path) -> bool:
        name = relative(path)
        return (
            name.startswith("db/")
            or path.name in {"models.py", "repository.py"}
            or path.name.endswith("_repository.py")
        )

    @pytest.mark.parametrize("path", modules(), ids=relative)
    def test_no_sql_outside_a_repository(self, path: Path) -> None:
        if self.is_store(path):
            return
        tree = ast.parse(path.read_text())
        modules_used = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        sql = {m for m in modules_used if m.split(".")[0] == "sqlalchemy"} - self.SESSION_ONLY
        assert sql == set(), f"{relative(path)} imports {sql}"
        assert not self.RUNS.search(path.read_text()), f"{relative(path)} runs a statement"


class TestTablesDeclaredOnce:
    """Every table has one declaration (a model in a `models.py`); no private copies."""

    def test_no_lightweight_table_copies(self) -> None:
        copies = [
            relative(path)
            for path in modules()
            if not relative(path).startswith("db/migrations/")
            and re.search(r"(?<![\w.])table\(\s*\"", path.read_text())
        ]
        assert copies == []

    def test_each_table_name_once(self) -> None:
        names = [
            name
            for path in modules()
            if path.name == "models.py"
            for name in re.findall(r'__tablename__ = "(\w+)"', path.read_text())
        ]
        assert names
        assert sorted(names) == sorted(set(names))


class TestOnePosteriorBuilder:
    """A posterior is built from sums in one place (stats/sums.py, `posterior_of`); the
    pooled segment model (stats/segments.py) builds its own shrunk ones on purpose."""

    def test_no_other_module_builds_one(self) -> None:
        builders = sorted(
            relative(path)
            for path in modules()
            if re.search(r"\.(from_counts|from_summary)\(", path.read_text())
        )
        assert builders == ["stats/segments.py", "stats/sums.py"]


class TestTheDocumentIsTrue:
    """docs/ARCHITECTURE.md names the code it describes; every name it gives can be
    followed: each file, module attribute, class, test and setting exists."""

    ROOT = PACKAGE.parents[1]
    TEXT = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    NAMES = sorted(set(re.findall(r"`([^`\n]+)`", TEXT)))
    SOURCE = "\n".join(path.read_text() for path in modules())

    def defined(self, name: str, text: str | None = None) -> bool:
        pattern = (
            rf"(^|\n)\s*(async def|def|class) {re.escape(name)}\b|(^|\n)\s*{re.escape(name)}\s*[:=]"
        )
        return re.search(pattern, self.SOURCE if text is None else text) is not None

    def module(self, dotted: str) -> Path | None:
        """`reports/summary`, `reports.summary`, `deps` or `runner` as a module file."""
        parts = dotted.replace("/", ".").split(".")
        exact = PACKAGE.joinpath(*parts).with_suffix(".py")
        if exact.is_file():
            return exact
        found = [p for p in modules() if p.with_suffix("").parts[-len(parts) :] == tuple(parts)]
        return found[0] if len(found) == 1 else None

    def test_every_file_exists(self) -> None:
        missing = []
        for name in self.NAMES:
            if not re.fullmatch(r"[\w./*-]+(\.py|\.md|/)", name) or "*" in name:
                continue
            candidates = [self.ROOT / name, PACKAGE / name]
            if not any(c.exists() for c in candidates) and not any(
                relative(p).endswith(name) for p in modules()
            ):
                missing.append(name)
        assert missing == []

    def test_every_module_attribute_exists(self) -> None:
        missing = []
        for name in self.NAMES:
            match = re.fullmatch(r"([a-z_/.]+)[./]([A-Za-z_]+)(\.[A-Za-z_]+)?(\(.*\))?", name)
            if match is None or name.endswith((".py", ".md")):
                continue
            path = self.module(match.group(1))
            if path is None:
                continue  # not a module (a table, a header, a command)
            inner = match.group(3)
            if not self.defined(match.group(2), path.read_text()) or (
                inner and not self.defined(inner[1:])
            ):
                missing.append(name)
        assert missing == []

    def test_every_class_and_test_exists(self) -> None:
        missing = []
        for name in self.NAMES:
            if "::" in name:
                file, *names = name.split("::")
                text = (self.ROOT / file).read_text()
                missing += [name for part in names if not self.defined(part, text)]
            elif (
                re.fullmatch(r"_?[A-Z][a-z]+[A-Za-z]*", name)
                and name != "APIRoute"  # FastAPI's
                and not self.defined(name)
            ):
                missing.append(name)
        assert missing == []

    def test_every_setting_exists(self) -> None:
        settings = (PACKAGE / "settings.py").read_text()
        missing = [
            name
            for name in re.findall(r"MABAPI_([A-Z_]+)", self.TEXT)
            if not self.defined(name.lower(), settings)
        ]
        assert missing == []

    def test_it_checks_something(self) -> None:
        assert len(self.NAMES) > 100
