"""Docker does not run on the development machines; these tests read the
Dockerfile and compose file and run what can be run of them."""

import re
from pathlib import Path

import yaml

from llmchat.tests.test_settings import BASE_DIR, run

DOCKERFILE = (BASE_DIR / "Dockerfile").read_text()


def test_the_image_is_python_313_slim_and_runs_as_a_non_root_user() -> None:
    assert "\nFROM python:3.13-slim\n" in DOCKERFILE
    assert "\nUSER llmchat\n" in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE
    assert "/health" in DOCKERFILE
    assert 'CMD ["gunicorn", "llmchat.asgi:application"]' in DOCKERFILE


def test_the_build_step_collectstatic_works_with_its_settings(tmp_path: Path) -> None:
    step = DOCKERFILE[
        DOCKERFILE.index("RUN DEBUG=false") : DOCKERFILE.index("collectstatic --noinput")
    ]
    env = dict(re.findall(r"([A-Z_]+)=(\S+)", step))
    assert env["DEBUG"] == "false"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'build.sqlite3'}"
    env["STATIC_ROOT"] = str(tmp_path / "static")
    result = run("manage.py", "collectstatic", "--noinput", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()


def test_compose_runs_migrations_before_the_app_with_postgres_and_redis() -> None:
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "redis", "migrate", "web"}
    web = services["web"]
    assert web["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert web["environment"]["DATABASE_URL"].startswith("postgres://llmchat:")
    assert web["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    for name in ("db", "redis"):
        assert "healthcheck" in services[name]
    # Longer than gunicorn's graceful_timeout, so open streams can finish.
    assert web["stop_grace_period"] == "130s"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = (BASE_DIR / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", "var/", ".git", "devtools/", "bench/"):
        assert entry in ignored
