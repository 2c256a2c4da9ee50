"""The database: migrations build exactly the schema the code declares; SQLite runs in WAL."""

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.migration import MigrationContext
from sqlalchemy import text

from ex_app.store.database import MIGRATIONS_DIR, create_database_engine, migrate, open_database
from ex_app.store.schema import Base


def test_migrations_build_the_declared_schema(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_sqlite_uses_wal_and_enforces_foreign_keys(tmp_path):
    sessions = open_database(f"sqlite:///{tmp_path / 'nested' / 'r.db'}")
    with sessions() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_migrating_twice_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_database(url)
    sessions = open_database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    with sessions() as session:
        assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_upgrading_a_database_with_data_keeps_it(tmp_path):
    from alembic import command
    from alembic.config import Config

    from ex_app.store.database import MIGRATIONS_DIR

    engine = create_database_engine(f"sqlite:///{tmp_path / 'r.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("INSERT INTO persons (id, name, hidden, created_at) VALUES (7, 'Ann', 0, '2026-01-01')"))
    migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(text("SELECT name, confirmed FROM persons WHERE id = 7")).one()
    assert tuple(row) == ("Ann", 0)
