"""The configuration documentation stays complete."""

import re
from pathlib import Path

import pytest

from llmchat.tests.test_settings import BASE_DIR, run

SOURCES = ["llmchat/settings.py", "gunicorn.conf.py"]


def variables_read() -> set[str]:
    names: set[str] = set()
    for source in SOURCES:
        text = (BASE_DIR / source).read_text()
        names |= set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]+)"', text))
    return names


def test_it_finds_the_variables() -> None:
    assert {"SECRET_KEY", "DATABASE_URL", "WEB_CONCURRENCY"} <= variables_read()


@pytest.mark.parametrize("name", sorted(variables_read()))
def test_the_readme_documents_every_variable(name: str) -> None:
    assert f"| `{name}` |" in (BASE_DIR / "README.md").read_text()


def test_env_example_loads_in_production_mode(tmp_path: Path) -> None:
    example = (BASE_DIR / ".env.example").read_text()
    env_file = tmp_path / "env"
    env_file.write_text(
        example.replace("SECRET_KEY=\n", f"SECRET_KEY={'example-secret-0123456789' * 3}\n")
    )
    result = run("manage.py", "check", env={"ENV_FILE": str(env_file)})
    assert result.returncode == 0, result.stderr
