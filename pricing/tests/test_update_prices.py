"""manage.py update_prices: LiteLLM, CSV and JSON sources; diff, dry run,
one transaction, history kept, idempotent."""

import http.server
import json
import lzma
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from pricing.models import ModelPrice, price_for

DATA = Path(__file__).parent / "data"
LITELLM = str(DATA / "litellm_sample.json")
CSV = str(DATA / "prices.csv")
# LiteLLM's price map as released in litellm 1.110.2 (see data/README.md).
RELEASED = DATA / "litellm-1.110.2-model_prices.json.xz"


@pytest.fixture(autouse=True)
def _no_prices(db: None) -> None:
    # Start from an empty table, not the shipped fixture.
    ModelPrice.objects.all().delete()


def update(*args: str) -> str:
    out = StringIO()
    call_command("update_prices", *args, stdout=out)
    return out.getvalue()


def test_it_reads_litellms_file() -> None:
    output = update(LITELLM)
    assert "5 added, 0 changed, 0 unchanged, 0 missing from the source." in output
    assert set(ModelPrice.objects.values_list("provider", "model")) == {
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-3-haiku-20240307"),
        ("google", "gemini-2.5-pro"),  # the gemini/ prefix dropped
    }
    mini = ModelPrice.objects.get(model="gpt-4o-mini")
    assert mini.input_per_mtok == Decimal("0.15")
    assert mini.cached_input_per_mtok == Decimal("0.075")
    assert mini.output_per_mtok == Decimal("0.6")
    assert mini.context_window == 128000
    sonnet = ModelPrice.objects.get(model="claude-sonnet-4-5")
    assert sonnet.cache_write_per_mtok == Decimal("3.75")
    assert sonnet.tier_threshold_tokens == 200_000
    assert sonnet.tier_input_per_mtok == Decimal("6")
    assert sonnet.tier_cache_write_per_mtok == Decimal("7.5")
    assert sonnet.tier_output_per_mtok == Decimal("22.5")
    gemini = ModelPrice.objects.get(model="gemini-2.5-pro")
    assert gemini.tier_cached_input_per_mtok == Decimal("0.625")
    assert ModelPrice.objects.get(model="claude-3-haiku-20240307").deprecated
    assert mini.source == LITELLM


def test_a_second_run_changes_nothing() -> None:
    update(LITELLM)
    count = ModelPrice.objects.count()
    output = update(LITELLM)
    assert "0 added, 0 changed, 5 unchanged" in output
    assert "Nothing to change." in output
    assert ModelPrice.objects.count() == count


def test_a_changed_price_is_a_new_row_and_history_stays(tmp_path: Path) -> None:
    update(CSV, "--effective-from", "2026-11-01")
    old = ModelPrice.objects.get(model="gpt-4o")
    changed = tmp_path / "prices.csv"
    changed.write_text(
        Path(CSV).read_text().replace("openai,gpt-4o,GPT-4o,2.5,", "openai,gpt-4o,GPT-4o,2,")
    )
    output = update(str(changed), "--effective-from", "2026-12-01")
    assert "~ changed   openai/gpt-4o: input_per_mtok 2.500000 -> 2" in output
    rows = ModelPrice.objects.filter(model="gpt-4o").order_by("effective_from")
    assert [r.input_per_mtok for r in rows] == [Decimal("2.5"), Decimal("2")]
    assert ModelPrice.objects.get(pk=old.pk).input_per_mtok == Decimal("2.5")
    # The price in effect depends on the time of the call.
    nov = datetime(2026, 11, 15, tzinfo=UTC)
    dec = datetime(2026, 12, 15, tzinfo=UTC)
    assert price_for("openai", "gpt-4o", nov).input_per_mtok == Decimal("2.5")  # type: ignore[union-attr]
    assert price_for("openai", "gpt-4o", dec).input_per_mtok == Decimal("2")  # type: ignore[union-attr]


def test_it_reads_csv() -> None:
    output = update(CSV)
    assert "2 added" in output
    sonnet = ModelPrice.objects.get(model="claude-sonnet-4-5")
    assert sonnet.name == "Claude Sonnet 4.5"
    assert sonnet.tier_output_per_mtok == Decimal("22.5")


def test_names_from_our_files_survive_a_litellm_update() -> None:
    update(CSV)
    output = update(LITELLM, "--provider", "openai")
    # Same prices for gpt-4o: LiteLLM has no display names, that is not a change.
    assert "1 added, 0 changed, 1 unchanged" in output
    assert ModelPrice.objects.get(model="gpt-4o").name == "GPT-4o"


def test_dry_run_writes_nothing() -> None:
    output = update(LITELLM, "--dry-run")
    assert "+ added     openai/gpt-4o: in 2.5 out 10 per 1M" in output
    assert "Dry run: nothing written." in output
    assert not ModelPrice.objects.exists()


def test_models_missing_from_the_source_are_reported_and_kept() -> None:
    update(LITELLM)
    output = update(CSV)
    assert "? missing   openai/gpt-4o-mini (not in the source; kept)" in output
    assert ModelPrice.objects.filter(model="gpt-4o-mini").exists()


def test_a_providers_fallback_price_is_never_missing_from_a_source() -> None:
    ModelPrice.objects.create(
        provider="openai", model="*", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)
    )
    output = update(CSV)
    assert "openai/*" not in output
    assert ModelPrice.objects.filter(model="*").exists()


def test_provider_filter() -> None:
    update(LITELLM, "--provider", "google")
    assert list(ModelPrice.objects.values_list("provider", flat=True)) == ["google"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"gpt-4o": {"input_cost_per_token": "lots", "output_cost_per_token": 1e-05, "litellm_provider": "openai", "mode": "chat"}}',
            "gpt-4o: a cost or token count is not a number",
        ),
        ("{not json", "Not valid JSON"),
        ('{"x": {"litellm_provider": "azure"}}', "No OpenAI, Anthropic or Gemini chat models"),
        ('[{"provider": "openai", "model": "m"}]', "item 1: input_per_mtok is required"),
        (
            '[{"provider": "nope", "model": "m", "input_per_mtok": "1", "output_per_mtok": "1"}]',
            "unknown provider",
        ),
        (
            '[{"provider": "openai", "model": "m", "input_per_mtok": "-1", "output_per_mtok": "1"}]',
            "input_per_mtok has a bad value",
        ),
        (
            '[{"provider": "openai", "model": "m", "input_per_mtok": "1", "output_per_mtok": "1", "colour": "red"}]',
            "unknown field(s) colour",
        ),
    ],
)
def test_a_bad_file_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        update(str(bad))
    assert not ModelPrice.objects.exists()


def test_a_malformed_csv(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("provider,model,input_per_mtok,output_per_mtok\nopenai,gpt-4o,2.5,ten\n")
    with pytest.raises(CommandError, match="line 2: output_per_mtok has a bad value 'ten'"):
        update(str(bad))
    assert not ModelPrice.objects.exists()


def test_one_bad_row_writes_nothing_at_all(tmp_path: Path) -> None:
    # A tier price without its threshold fails validation on the second model:
    # the first must not have been written either.
    good_then_bad = tmp_path / "mixed.json"
    good_then_bad.write_text(
        '[{"provider": "openai", "model": "a", "input_per_mtok": "1", "output_per_mtok": "2"},'
        ' {"provider": "openai", "model": "b", "input_per_mtok": "1", "output_per_mtok": "2",'
        '  "tier_input_per_mtok": "5"}]'
    )
    with pytest.raises(Exception, match="threshold"):
        update(str(good_then_bad))
    assert not ModelPrice.objects.exists()


def test_missing_file_and_bad_date() -> None:
    with pytest.raises(CommandError, match="Could not read"):
        update("/nonexistent/prices.json")
    with pytest.raises(CommandError, match="is not a date"):
        update(LITELLM, "--effective-from", "next tuesday")


def test_an_effective_date_before_the_current_price_is_refused(tmp_path: Path) -> None:
    update(CSV, "--effective-from", "2026-12-01")
    changed = tmp_path / "prices.csv"
    changed.write_text(Path(CSV).read_text().replace(",2.5,1.25,", ",2,1,"))
    with pytest.raises(CommandError, match="already has a price from"):
        update(str(changed), "--effective-from", "2026-11-01")
    assert ModelPrice.objects.filter(model="gpt-4o").count() == 1


@pytest.fixture
def price_server() -> Iterator[str]:
    body = Path(LITELLM).read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model_prices_and_context_window.json"
    server.shutdown()


def test_it_fetches_a_url(price_server: str) -> None:
    output = update(price_server)
    assert "5 added" in output
    assert ModelPrice.objects.get(model="gpt-4o").source == price_server


def test_an_unreachable_url_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="Could not fetch"):
        update("http://127.0.0.1:1/prices.json")


# --- LiteLLM's released price map ---------------------------------------------------


@pytest.fixture(scope="module")
def released_text() -> str:
    return lzma.decompress(RELEASED.read_bytes()).decode()


@pytest.fixture
def released(tmp_path: Path, released_text: str) -> str:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(released_text)
    return str(path)


def per_million(released_text: str, key: str, field: str) -> Decimal:
    return Decimal(str(json.loads(released_text)[key][field])) * 1_000_000


def test_it_dry_runs_litellms_released_file(released: str) -> None:
    output = update(released, "--dry-run")
    assert "177 added, 0 changed, 0 unchanged, 0 missing from the source." in output
    assert "Dry run: nothing written." in output
    assert not ModelPrice.objects.exists()


def test_it_loads_litellms_released_file(released: str, released_text: str) -> None:
    output = update(released)
    assert "Wrote 177 new price row(s)" in output
    counts = {
        p: ModelPrice.objects.filter(provider=p).count() for p in ("openai", "anthropic", "google")
    }
    assert counts == {"openai": 113, "anthropic": 22, "google": 42}
    for provider, model, key in [
        ("openai", "gpt-4o", "gpt-4o"),
        ("openai", "gpt-5", "gpt-5"),
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("google", "gemini-2.5-pro", "gemini/gemini-2.5-pro"),
        ("google", "gemini-flash-latest", "gemini/gemini-flash-latest"),
    ]:
        price = ModelPrice.objects.get(provider=provider, model=model)
        assert price.input_per_mtok == per_million(released_text, key, "input_cost_per_token")
        assert price.output_per_mtok == per_million(released_text, key, "output_cost_per_token")
        assert price.cached_input_per_mtok == per_million(
            released_text, key, "cache_read_input_token_cost"
        )
    assert ModelPrice.objects.get(model="gpt-4o").input_per_mtok == Decimal("2.5")
    sonnet = ModelPrice.objects.get(model="claude-sonnet-4-5")
    assert sonnet.cache_write_per_mtok == Decimal("3.75")
    pro = ModelPrice.objects.get(model="gemini-2.5-pro")
    assert (pro.tier_threshold_tokens, pro.tier_input_per_mtok) == (200_000, Decimal("2.5"))
    # Its two entries disagree; the gemini/ one (free, as Google's experiment was) wins.
    assert ModelPrice.objects.get(model="gemini-exp-1206").input_per_mtok == 0


def test_a_second_run_of_the_released_file_changes_nothing(released: str) -> None:
    update(released)
    rows = list(ModelPrice.objects.order_by("pk").values())
    output = update(released)
    assert "0 added, 0 changed, 177 unchanged, 0 missing from the source." in output
    assert "Nothing to change." in output
    assert list(ModelPrice.objects.order_by("pk").values()) == rows


def test_it_reports_what_it_skipped_and_why(released: str) -> None:
    output = update(released, "--dry-run")
    assert (
        "Skipped 4701 of the source's 4878 entries:\n"
        "      1 not a model entry\n"
        "   4547 another provider\n"
        "    136 not a chat model\n"
        "     12 not a plain model id (fine-tune or path)\n"
        "      1 no input or output price per token\n"
        "      3 alias of a kept entry, same values\n"
        "      1 alias of a kept entry, different values\n"
        "        gemini-exp-1206 (kept gemini/gemini-exp-1206; input_per_mtok 0, here 0.3, "
    ) in output
    # The other reasons' names only at --verbosity 2, and never the other providers'.
    assert "gemini-flash-latest\n" not in output
    verbose = update(released, "--dry-run", "--verbosity", "2")
    assert "        gemini-flash-latest\n" in verbose
    assert "        ft:gpt-4o-2024-08-06\n" in verbose
    assert "        text-embedding-3-small\n" in verbose
    assert "azure/gpt-4o" not in verbose


ALIASES = {
    "gemini-flash-latest": {
        "input_cost_per_token": 7.5e-07,
        "output_cost_per_token": 3.75e-06,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "gemini/gemini-flash-latest": {
        "input_cost_per_token": 7.5e-07,
        "output_cost_per_token": 3.75e-06,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "gemini-exp-1206": {
        "input_cost_per_token": 3e-07,
        "output_cost_per_token": 2.5e-06,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "gemini/gemini-exp-1206": {
        "input_cost_per_token": 0,
        "output_cost_per_token": 0,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "gpt-x": {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "openai/gpt-x": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 4e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "claude-y": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "litellm_provider": "anthropic",
        "mode": "chat",
    },
}


def test_aliases_are_resolved_the_same_whatever_the_key_order(tmp_path: Path) -> None:
    outputs, tables = set(), set()
    # Every rotation, forwards and backwards: each key comes first once, and each
    # pair of aliases is met in both orders.
    keys = list(ALIASES)
    rotations = [keys[i:] + keys[:i] for i in range(len(keys))]
    for n, order in enumerate(rotations + [r[::-1] for r in rotations]):
        path = tmp_path / f"order-{n}.json"
        path.write_text(json.dumps({key: ALIASES[key] for key in order}))
        outputs.add(update(str(path), "--dry-run").replace(str(path), "FILE"))
        update(str(path), "--effective-from", "2026-01-01")
        tables.add(
            tuple(
                ModelPrice.objects.order_by("provider", "model").values_list(
                    "provider", "model", "input_per_mtok", "output_per_mtok"
                )
            )
        )
        ModelPrice.objects.all().delete()
    assert len(outputs) == 1
    assert tables == {
        (
            ("anthropic", "claude-y", Decimal(3), Decimal(15)),
            ("google", "gemini-exp-1206", Decimal(0), Decimal(0)),
            ("google", "gemini-flash-latest", Decimal("0.75"), Decimal("3.75")),
            ("openai", "gpt-x", Decimal(2), Decimal(4)),  # the provider-prefixed entry
        )
    }
    (output,) = outputs
    assert "      1 alias of a kept entry, same values\n" in output
    assert "      2 alias of a kept entry, different values\n" in output
    assert "        gpt-x (kept openai/gpt-x; input_per_mtok 2, here 1, " in output
