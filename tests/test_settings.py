"""Settings: URLs, the DATABASE_URL fallback, secrets."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices

from mabapi.settings import Settings, to_async_url


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("sqlite:///./mabapi.db", "sqlite+aiosqlite:///./mabapi.db"),
            ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
            ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
            ("postgres://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
            ("postgresql+psycopg2://u@h/d", "postgresql+asyncpg://u@h/d"),
            ("postgresql://u@h/d?sslmode=require", "postgresql+asyncpg://u@h/d?ssl=require"),
        ],
    )
    def test_async_driver_is_chosen(self, raw: str, expected: str) -> None:
        assert to_async_url(raw).render_as_string(hide_password=False) == expected

    @pytest.mark.parametrize("raw", ["mysql://u@h/d", "nonsense"])
    def test_unsupported_urls_are_refused_clearly(self, raw: str) -> None:
        with pytest.raises(ValueError, match=r"unsupported database|could not be parsed"):
            to_async_url(raw)

    def test_default_is_a_local_sqlite_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MABAPI_DATABASE_URL", raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        settings = Settings(_env_file=None)
        assert settings.async_database_url.render_as_string() == "sqlite+aiosqlite:///./mabapi.db"
        assert settings.is_sqlite
        assert settings.auto_create is True
        assert settings.migrate_on_start is True

    def test_database_url_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MABAPI_DATABASE_URL", raising=False)
        monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db/prod")
        settings = Settings(_env_file=None)
        assert settings.async_database_url.get_backend_name() == "postgresql"
        monkeypatch.setenv("MABAPI_DATABASE_URL", "sqlite:///other.db")
        assert Settings(_env_file=None).is_sqlite

    def test_password_never_shows_in_repr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MABAPI_DATABASE_URL", "postgresql://app:hunter2@db/prod")
        settings = Settings(_env_file=None)
        assert "hunter2" not in repr(settings)
        assert "hunter2" not in str(settings.model_dump())

    def test_env_file_is_read(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
    ) -> None:
        monkeypatch.delenv("MABAPI_AUTO_CREATE", raising=False)
        env_file = tmp_path / ".env"  # type: ignore[operator]
        env_file.write_text("MABAPI_AUTO_CREATE=false\nMABAPI_PORT=9001\n")
        settings = Settings(_env_file=env_file)
        assert settings.auto_create is False
        assert settings.port == 9001

    def test_bad_values_fail_at_start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MABAPI_PORT", "0")
        with pytest.raises(ValueError, match="port"):
            Settings(_env_file=None)


class TestEnvTemplate:
    """`.env.bandit` is the documented template the original README copies to `.env`."""

    template = __import__("pathlib").Path(__file__).resolve().parents[1] / ".env.bandit"

    def test_documents_every_setting(self) -> None:
        text = self.template.read_text()
        for name, field in Settings.model_fields.items():
            alias = field.validation_alias
            spellings = {f"MABAPI_{name.upper()}"}
            if isinstance(alias, AliasChoices):
                spellings |= {str(choice) for choice in alias.choices if str(choice).isupper()}
            assert any(f"{spelling}=" in text for spelling in spellings), f"{name} is undocumented"

    def test_its_values_are_the_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in Settings.model_fields:
            monkeypatch.delenv(f"MABAPI_{name.upper()}", raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        from_template = Settings(_env_file=self.template)
        defaults = Settings(_env_file=None)
        assert from_template.model_dump(exclude={"database_url"}) == defaults.model_dump(
            exclude={"database_url"}
        )
        assert from_template.async_database_url == defaults.async_database_url


def test_the_readme_documents_every_setting() -> None:
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("## Settings") : readme.index("## Dashboard")]
    for name, field in Settings.model_fields.items():
        spellings = {f"MABAPI_{name.upper()}"}
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            spellings |= {str(choice) for choice in alias.choices if str(choice).isupper()}
        assert any(f"`{spelling}`" in table for spelling in spellings), f"{name} is undocumented"
