from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from pricing.models import ModelPrice

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _no_prices(db: None) -> None:
    ModelPrice.objects.all().delete()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_update_is_a_no_op(tmp_path: Path, fmt: str) -> None:
    call_command("update_prices", str(DATA / "litellm_sample.json"), stdout=StringIO())
    target = tmp_path / f"prices.{fmt}"
    call_command("export_prices", "--format", fmt, "--output", str(target), stderr=StringIO())
    out = StringIO()
    call_command("update_prices", str(target), "--format", fmt, stdout=out)
    assert "0 added, 0 changed, 5 unchanged, 0 missing" in out.getvalue()


def test_export_writes_the_current_price_only(tmp_path: Path) -> None:
    call_command(
        "update_prices",
        str(DATA / "prices.csv"),
        "--effective-from",
        "2026-01-01",
        stdout=StringIO(),
    )
    changed = tmp_path / "p.csv"
    changed.write_text((DATA / "prices.csv").read_text().replace(",2.5,1.25,", ",2,1,"))
    call_command("update_prices", str(changed), "--effective-from", "2026-02-01", stdout=StringIO())
    out = StringIO()
    call_command("export_prices", "--format", "csv", "--provider", "openai", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("provider,model,input_per_mtok,output_per_mtok,name,")
    assert len(lines) == 2
    assert lines[1].startswith("openai,gpt-4o,2.000000,10.000000,GPT-4o,1.000000,")
