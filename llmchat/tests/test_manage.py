"""manage.py without a configured production environment (DEBUG unset, no SECRET_KEY,
as in a `make run` checkout): help works, real commands refuse in a clear message.

Each case runs manage.py in a fresh process with a clean environment.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD_SECRET = "k3y-for-tests-only-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # Nothing from the developer's shell or .env: DEBUG is unset, so production mode.
    base = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "ENV_FILE": ""}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (["export_usage", "--help"], "--since DATE"),
        (["export_usage", "-h"], "--since DATE"),
        (["help", "export_usage"], "--since DATE"),
        (["migrate", "--help"], "--fake"),
        (["help"], "export_usage"),
        (["--help"], "sweep_streams"),
        ([], "createsuperuser"),
    ],
)
def test_help_works_without_production_settings(args: list[str], shows: str) -> None:
    result = manage(*args)
    assert result.returncode == 0, result.stderr
    assert shows in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["export_usage"],
        ["migrate", "--noinput"],
        ["createsuperuser", "--noinput", "--email", "boss@example.com"],
        # After "--", -h is the command's argument, not a request for help.
        ["dbshell", "--", "-h"],
    ],
)
def test_real_commands_refuse_in_a_clear_message_not_a_traceback(args: list[str]) -> None:
    result = manage(*args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("SECRET_KEY is missing, shorter than 50 characters")
    assert "DEBUG=true for development" in lines[1]
    assert len(lines) == 2


def test_the_message_names_what_is_missing() -> None:
    result = manage("check", SECRET_KEY=GOOD_SECRET)
    assert result.returncode == 1
    assert result.stderr.startswith("ALLOWED_HOSTS is empty.")
    assert "Traceback" not in result.stderr


def test_with_debug_on_commands_run() -> None:
    result = manage("check", DEBUG="true", DATABASE_URL="sqlite:///:memory:")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
