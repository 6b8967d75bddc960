"""Configuration: class defaults, then the environment, then the caller's overrides."""

import os

import pytest

import config
from config import instance_secret_key
from webapp.db import get_engine


def test_class_defaults_apply_when_the_environment_is_silent(make_app, monkeypatch):
    monkeypatch.delenv("DB_POOL_TIMEOUT", raising=False)

    assert make_app().config["DB_POOL_TIMEOUT"] == config.Config.DB_POOL_TIMEOUT


def test_the_environment_overrides_the_defaults(make_app, monkeypatch):
    monkeypatch.setenv("DB_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("SQL_ECHO", "1")

    app = make_app()

    assert app.config["DB_POOL_TIMEOUT"] == 2.5
    assert app.config["SQL_ECHO"] is True
    assert get_engine(app).pool.timeout() == 2.5


def test_the_callers_overrides_win_over_the_environment(make_app, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/nope")
    monkeypatch.setenv("DB_POOL_TIMEOUT", "2.5")

    app = make_app(DB_POOL_TIMEOUT=1.0)

    assert app.config["DB_POOL_TIMEOUT"] == 1.0
    assert get_engine(app).url.database == str(tmp_path / "app.sqlite3")


@pytest.mark.parametrize(
    "name, value",
    [
        ("DB_POOL_TIMEOUT", "soon"),
        ("DB_POOL_SIZE", "0"),
        ("GUNICORN_THREADS", "-1"),
        ("DB_STATEMENT_TIMEOUT", "0"),
        ("DB_STATEMENT_DEADLINE", "-5"),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT", "later"),
        ("DB_PING_AFTER_IDLE", "-1"),
    ],
)
def test_a_bad_environment_value_stops_start_up_naming_the_variable(make_app, monkeypatch, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(RuntimeError, match=name):
        make_app()


@pytest.mark.parametrize(
    "name, cls",
    [
        ("development", config.DevelopmentConfig),
        ("production", config.ProductionConfig),
        ("testing", config.TestingConfig),
    ],
)
def test_app_env_picks_the_config_class(name, cls):
    assert config.config_class({"APP_ENV": name}) is cls


def test_an_unknown_app_env_is_refused():
    with pytest.raises(RuntimeError, match="APP_ENV"):
        config.config_class({"APP_ENV": "staging"})


def test_production_refuses_to_start_without_a_secret_key(make_app, monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)

    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        make_app()


def test_production_uses_the_secret_key_from_the_environment_and_secure_cookies(make_app, monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")

    app = make_app()

    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_development_makes_a_secret_key_once_and_keeps_it(tmp_path):
    first = instance_secret_key(str(tmp_path))
    second = instance_secret_key(str(tmp_path))

    assert len(first) >= 64 and first == second
    assert oct(os.stat(tmp_path / "secret_key").st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def test_without_a_secret_key_development_uses_the_instance_key(make_app, monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.delenv("SECRET_KEY", raising=False)

    app = make_app()

    assert app.config["SECRET_KEY"] == instance_secret_key(app.instance_path)
