"""Settings come from the environment; production refuses unsafe values.

Each case runs Django in a fresh process, because settings are read once.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD_SECRET = "k3y-for-tests-only-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": GOOD_SECRET,
    "ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "sqlite:///:memory:",
    "EMAIL_URL": "smtp+tls://mailer:mail-password@smtp.example.com:587",
}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing from the developer's shell or .env leaks in.
    base = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "ENV_FILE": ""}
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def setting(name: str, env: dict[str, str]) -> str:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'llmchat.settings'; "
        "from django.conf import settings; "
        f"print(repr(settings.{name}))"
    )
    result = run("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_check_deploy_passes_in_production() -> None:
    result = run("manage.py", "check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (None, "missing"),
        ("short-secret", "short"),
        ("dev-insecure-0nly-for-local-development-never-in-production-xyz", "dev default"),
        ("a" * 60, "too few distinct characters"),
    ],
)
def test_it_refuses_to_start_with_a_weak_secret_key(secret: str | None, why: str) -> None:
    env = dict(PRODUCTION)
    if secret is None:
        del env["SECRET_KEY"]
    else:
        env["SECRET_KEY"] = secret
    result = run("manage.py", "check", env=env)
    assert result.returncode != 0, why
    assert "SECRET_KEY is missing, shorter than 50 characters or the development default" in (
        result.stderr
    )
    if secret:
        assert secret not in result.stderr


def test_it_refuses_to_start_without_allowed_hosts() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "ALLOWED_HOSTS"}
    result = run("manage.py", "check", env=env)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is empty" in result.stderr


def test_it_refuses_an_unknown_email_verification_mode() -> None:
    result = run("manage.py", "check", env={**PRODUCTION, "ACCOUNT_EMAIL_VERIFICATION": "maybe"})
    assert result.returncode != 0
    assert "ACCOUNT_EMAIL_VERIFICATION must be one of" in result.stderr


def test_development_needs_no_configuration() -> None:
    result = run("manage.py", "check", env={"DEBUG": "true", "DATABASE_URL": "sqlite:///:memory:"})
    assert result.returncode == 0, result.stderr


def test_production_turns_on_the_security_settings() -> None:
    assert setting("SESSION_COOKIE_SECURE", PRODUCTION) == "True"
    assert setting("CSRF_COOKIE_SECURE", PRODUCTION) == "True"
    assert setting("SECURE_SSL_REDIRECT", PRODUCTION) == "True"
    assert setting("SECURE_HSTS_SECONDS", PRODUCTION) == "31536000"
    assert setting("ACCOUNT_EMAIL_VERIFICATION", PRODUCTION) == "'mandatory'"
    assert "CompressedManifestStaticFilesStorage" in setting("STORAGES", PRODUCTION)


def test_ssl_redirect_and_hsts_are_configurable() -> None:
    env = {**PRODUCTION, "SECURE_SSL_REDIRECT": "false", "SECURE_HSTS_SECONDS": "3600"}
    assert setting("SECURE_SSL_REDIRECT", env) == "False"
    assert setting("SECURE_HSTS_SECONDS", env) == "3600"
    env["USE_X_FORWARDED_PROTO"] = "true"
    assert setting("SECURE_PROXY_SSL_HEADER", env) == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_make_run_defaults_to_optional_email_verification() -> None:
    env = {"DEBUG": "true", "DATABASE_URL": "sqlite:///:memory:"}
    assert setting("ACCOUNT_EMAIL_VERIFICATION", env) == "'optional'"


def test_the_default_database_is_a_sqlite_file_under_var(tmp_path: Path) -> None:
    # A relative sqlite path is relative to the project, its folder made on demand.
    env = {"DEBUG": "true"}
    name = setting("DATABASES['default']['NAME']", env)
    assert name == repr(str(BASE_DIR / "var" / "db.sqlite3"))
    target = tmp_path / "nested" / "dir" / "x.sqlite3"
    setting("DATABASES", {"DEBUG": "true", "DATABASE_URL": f"sqlite:///{target}"})
    assert target.parent.is_dir()


def test_postgresql_uses_a_connection_pool() -> None:
    env = {**PRODUCTION, "DATABASE_URL": "postgres://u:p@db.internal:5432/llmchat"}
    options = setting("DATABASES['default']['OPTIONS']", env)
    assert "'pool': {'min_size': 2, 'max_size': 20, 'timeout': 10.0, 'check': <function" in options
    assert "check_connection" in options  # llmchat.dbpool's
    assert setting("DATABASES['default']['CONN_MAX_AGE']", env) == "0"
    env["DATABASE_POOL"] = "false"
    assert "pool" not in setting("DATABASES['default'].get('OPTIONS', {})", env)


def test_redis_url_selects_the_redis_cache() -> None:
    env = {**PRODUCTION, "REDIS_URL": "redis://127.0.0.1:6379/3"}
    caches = setting("CACHES", env)
    assert "django.core.cache.backends.redis.RedisCache" in caches
    assert "redis://127.0.0.1:6379/3" in caches
    assert "LocMemCache" in setting("CACHES", PRODUCTION)
    # Sessions from the shared cache, never from one process's own memory.
    assert setting("SESSION_ENGINE", env) == "'django.contrib.sessions.backends.cached_db'"
    assert setting("SESSION_ENGINE", PRODUCTION) == "'django.contrib.sessions.backends.db'"


def test_email_is_console_by_default_and_smtp_from_email_url() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "EMAIL_URL"}
    assert setting("MAILERS", env) == (
        "{'default': {'BACKEND': 'django.core.mail.backends.console.EmailBackend'}}"
    )
    env = {**PRODUCTION, "EMAIL_URL": "smtp+tls://mailer:s3cret@smtp.example.com:587"}
    mailer = setting("MAILERS['default']", env)
    assert "smtp.EmailBackend" in mailer
    assert "'host': 'smtp.example.com', 'port': 587" in mailer
    assert "'use_tls': True" in mailer


def test_google_is_configured_from_the_environment() -> None:
    assert "APPS" not in setting("SOCIALACCOUNT_PROVIDERS", PRODUCTION)
    env = {**PRODUCTION, "GOOGLE_CLIENT_ID": "cid.apps", "GOOGLE_CLIENT_SECRET": "gsecret"}
    assert "'client_id': 'cid.apps'" in setting("SOCIALACCOUNT_PROVIDERS", env)
