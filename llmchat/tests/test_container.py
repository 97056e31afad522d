"""Docker does not run on the development machines. These tests run what can be run
of the image's build, check what goes into the image, and check that the compose
stack's parts fit together. How the image serves (gunicorn, /health over plain HTTP)
is tested for real in test_serving.py."""

import re
import runpy
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pathspec
import pytest
import yaml

from llmchat.tests.test_settings import BASE_DIR, run

DOCKERFILE = (BASE_DIR / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


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


def test_the_image_runs_as_a_user_other_than_root() -> None:
    # Nothing to run without Docker: the last USER is the one the container gets.
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}


def left_out_of_the_image(paths: list[str]) -> set[str]:
    # .dockerignore and .gitignore patterns agree on everything this file uses.
    lines = (BASE_DIR / ".dockerignore").read_text().splitlines()
    spec = pathspec.PathSpec.from_lines("gitignore", lines)
    return set(spec.match_files(paths))


def test_of_the_checkout_the_image_leaves_out_only_dev_tools_and_benchmarks() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=BASE_DIR, capture_output=True, check=True, text=True
    ).stdout.split("\0")[:-1]
    expected = {path for path in tracked if path.startswith(("devtools/", "bench/"))}
    assert {path.split("/")[0] for path in expected} == {"devtools", "bench"}
    assert left_out_of_the_image(tracked) == expected


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".venv/bin/python",
        ".git/config",
        "var/db.sqlite3",
        "staticfiles/staticfiles.json",
        "conversations/__pycache__/models.cpython-313.pyc",
    ],
)
def test_secrets_and_local_state_stay_out_of_the_image(path: str) -> None:
    assert left_out_of_the_image([path]) == {path}


def test_compose_starts_the_app_once_its_migrations_have_succeeded() -> None:
    services = COMPOSE["services"]
    depends_on = services["web"]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]


def test_compose_waits_only_on_health_that_a_service_reports() -> None:
    services = COMPOSE["services"]
    waits = [
        (name, needed)
        for name, service in services.items()
        for needed, when in service.get("depends_on", {}).items()
        if when["condition"] == "service_healthy"
    ]
    assert waits
    for name, needed in waits:
        assert "healthcheck" in services[needed], f"{name} waits on {needed}'s health"


def test_the_app_uses_the_stacks_postgres_and_redis() -> None:
    services = COMPOSE["services"]
    environment = services["web"]["environment"]
    # ${VAR:?message} is filled in by compose, before the URL is read.
    database = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", environment["DATABASE_URL"]))
    cache = urlsplit(environment["REDIS_URL"])
    assert database.scheme == "postgres"
    assert services[database.hostname]["image"].startswith("postgres:")
    assert cache.scheme == "redis"
    assert services[cache.hostname]["image"].startswith("redis:")


def test_compose_gives_open_streams_longer_than_gunicorn_lets_them_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUNICORN_GRACEFUL_TIMEOUT", raising=False)
    gunicorn = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    grace = COMPOSE["services"]["web"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace), grace
    assert int(grace[:-1]) > gunicorn["graceful_timeout"]
