"""Price tables in and out: our JSON and CSV formats, LiteLLM's JSON, the diff
between a source and the database, and applying it.

Our format (JSON: a list of objects; CSV: one row each, same column names) has the
fields of `ROW_FIELDS`; prices are decimal strings per million tokens.
"""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "prices.json"
PROVIDERS = ("openai", "anthropic", "google", "compatible", "demo")
MILLION = Decimal(1_000_000)
FETCH_TIMEOUT = 20
MAX_SOURCE_BYTES = 50 * 1024 * 1024


class PriceSourceError(Exception):
    """A price source that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class PriceRow:
    provider: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    name: str = ""
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    tier_threshold_tokens: int | None = None
    tier_input_per_mtok: Decimal | None = None
    tier_cached_input_per_mtok: Decimal | None = None
    tier_cache_write_per_mtok: Decimal | None = None
    tier_output_per_mtok: Decimal | None = None
    effective_from: date | None = None
    source: str = ""
    deprecated: bool = False
    # What a source does not say (LiteLLM has no display names) is not a change.
    unknown: frozenset[str] = field(default=frozenset(), compare=False)

    def price_key(self) -> tuple[object, ...]:
        from pricing.models import PRICE_FIELDS

        return tuple(getattr(self, f) for f in PRICE_FIELDS)


ROW_FIELDS = [f.name for f in fields(PriceRow) if f.name != "unknown"]
_DECIMALS = {f.name for f in fields(PriceRow) if "per_mtok" in f.name}
_INTS = {"context_window", "max_output_tokens", "tier_threshold_tokens"}


# --- Reading ---------------------------------------------------------------------


def read_source(location: str) -> str:
    """The text of a file or an http(s) URL (fetched with a timeout)."""
    if re.match(r"^https?://", location):
        try:
            with urllib.request.urlopen(location, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
                data = response.read(MAX_SOURCE_BYTES + 1)
        except (OSError, ValueError) as exc:
            raise PriceSourceError(f"Could not fetch {location}: {exc}") from None
    else:
        try:
            data = Path(location).read_bytes()
        except OSError as exc:
            raise PriceSourceError(f"Could not read {location}: {exc.strerror}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise PriceSourceError(f"{location} is larger than {MAX_SOURCE_BYTES} bytes.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PriceSourceError(f"{location} is not UTF-8 text.") from None


def guess_format(location: str, text: str) -> str:
    if location.lower().endswith(".csv"):
        return "csv"
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "litellm"
    if stripped.startswith("["):
        return "json"
    return "csv"


# Why a source's entry was left out, in the order the report lists them.
SKIP_REASONS = {
    "entry": "not a model entry",
    "provider": "another provider",
    "mode": "not a chat model",
    "name": "not a plain model id (fine-tune or path)",
    "price": "no input or output price per token",
    "alias": "alias of a kept entry, same values",
    "conflict": "alias of a kept entry, different values",
}


@dataclass
class ParsedSource:
    rows: list[PriceRow]
    entries: int  # how many entries the source had, kept or not
    # reason (a key of SKIP_REASONS) -> the skipped entries' names, sorted
    skipped: dict[str, list[str]] = field(default_factory=dict)


def parse(text: str, fmt: str, *, source: str = "") -> ParsedSource:
    if fmt not in ("json", "csv", "litellm"):
        raise PriceSourceError(f"Unknown format {fmt!r}; use litellm, csv or json.")
    if fmt == "litellm":
        parsed = parse_litellm(text, source=source)
    else:
        rows = (parse_json if fmt == "json" else parse_csv)(text, source=source)
        parsed = ParsedSource(rows=rows, entries=len(rows))
    seen: set[tuple[str, str]] = set()
    for row in parsed.rows:
        key = (row.provider, row.model)
        if key in seen:
            raise PriceSourceError(f"{row.provider}/{row.model} appears twice.")
        seen.add(key)
    return parsed


def parse_json(text: str, *, source: str = "") -> list[PriceRow]:
    try:
        data = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise PriceSourceError(f"Not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise PriceSourceError("Expected a JSON list of price objects.")
    return [_row_from_mapping(item, f"item {i + 1}", source) for i, item in enumerate(data)]


def parse_csv(text: str, *, source: str = "") -> list[PriceRow]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"provider", "model"} <= set(reader.fieldnames):
        raise PriceSourceError("The CSV needs a header row with at least provider and model.")
    rows = []
    for line, record in enumerate(reader, start=2):
        cleaned = {k: (v if v != "" else None) for k, v in record.items() if k}
        rows.append(_row_from_mapping(cleaned, f"line {line}", source))
    return rows


def _row_from_mapping(item: Any, where: str, source: str) -> PriceRow:
    if not isinstance(item, dict):
        raise PriceSourceError(f"{where}: expected an object.")
    unknown = set(item) - set(ROW_FIELDS)
    if unknown:
        raise PriceSourceError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.")
    values: dict[str, Any] = {}
    for name in ROW_FIELDS:
        raw = item.get(name)
        try:
            values[name] = _convert(name, raw)
        except (InvalidOperation, ValueError, TypeError):
            raise PriceSourceError(f"{where}: {name} has a bad value {raw!r}.") from None
    for required in ("provider", "model", "input_per_mtok", "output_per_mtok"):
        if values.get(required) in (None, ""):
            raise PriceSourceError(f"{where}: {required} is required.")
    if values["provider"] not in PROVIDERS:
        raise PriceSourceError(f"{where}: unknown provider {values['provider']!r}.")
    values["name"] = values["name"] or ""
    values["source"] = values["source"] or source
    values["deprecated"] = bool(values["deprecated"])
    missing = {n for n in ("name",) if not values[n]}
    return PriceRow(**values, unknown=frozenset(missing))


def _convert(name: str, raw: Any) -> Any:
    if raw is None:
        return None
    if name in _DECIMALS:
        value = Decimal(str(raw).strip())
        if not value.is_finite() or value < 0:
            raise ValueError(name)
        return value.normalize() if value else Decimal(0)
    if name in _INTS:
        number = int(str(raw).strip())
        if number < 0:
            raise ValueError(name)
        return number
    if name == "effective_from":
        return date.fromisoformat(str(raw).strip()[:10])
    if name == "deprecated":
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in {"1", "true", "yes"}
    return str(raw).strip()


# LiteLLM's provider names and ours; its keys are the model id, or the provider's
# name, a slash and the model id.
_LITELLM_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_TIER = re.compile(
    r"^(input|output|cache_read_input|cache_creation_input)_(?:token_)?cost(?:_per_token)?_above_(\d+)k_tokens$"
)


def parse_litellm(text: str, *, source: str = "") -> ParsedSource:
    """LiteLLM's model_prices_and_context_window.json: chat models of OpenAI,
    Anthropic and Gemini, per-token costs turned into per-million prices, one row
    per model whatever the file's key order; every other entry is skipped with
    its reason."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise PriceSourceError(f"Not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceSourceError("Expected LiteLLM's JSON object keyed by model name.")
    skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
    # (provider, model) -> [(key is provider-prefixed, key, row)]
    candidates: dict[tuple[str, str], list[tuple[bool, str, PriceRow]]] = {}
    today = datetime.now(UTC).date()
    for key, spec in data.items():
        if key == "sample_spec" or not isinstance(spec, dict):
            skipped["entry"].append(key)
            continue
        litellm_provider = str(spec.get("litellm_provider"))
        provider = _LITELLM_PROVIDERS.get(litellm_provider)
        if provider is None:
            skipped["provider"].append(key)
            continue
        if spec.get("mode", "chat") not in ("chat", "responses"):
            skipped["mode"].append(key)
            continue
        model = key.removeprefix(f"{litellm_provider}/")
        if "/" in model or model.startswith("ft:"):
            skipped["name"].append(key)
            continue
        try:
            row = _litellm_row(provider, model, spec, source, today)
        except (InvalidOperation, ValueError, TypeError):
            raise PriceSourceError(f"{key}: a cost or token count is not a number.") from None
        if row is None:
            skipped["price"].append(key)
            continue
        candidates.setdefault((provider, model), []).append((key != model, key, row))
    rows = []
    for _, entries in sorted(candidates.items()):
        # LiteLLM looks a call to provider P up as "P/model" before the bare
        # "model" (utils.get_model_info), so the prefixed entry is the one it bills by.
        entries.sort(key=lambda entry: (not entry[0], entry[1]))
        _, kept_key, kept = entries[0]
        rows.append(kept)
        for _, key, row in entries[1:]:
            if row == kept:
                skipped["alias"].append(key)
            else:
                skipped["conflict"].append(f"{key} (kept {kept_key}; {_differences(kept, row)})")
    if not rows:
        raise PriceSourceError("No OpenAI, Anthropic or Gemini chat models found in the file.")
    return ParsedSource(
        rows=rows,
        entries=len(data),
        skipped={reason: sorted(names) for reason, names in skipped.items() if names},
    )


def _differences(kept: PriceRow, other: PriceRow) -> str:
    return ", ".join(
        f"{name} {_text(getattr(kept, name))}, here {_text(getattr(other, name))}"
        for name in ROW_FIELDS
        if getattr(kept, name) != getattr(other, name)
    )


def _text(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _per_million(value: Any) -> Decimal | None:
    if value is None:
        return None
    price = (Decimal(str(value)) * MILLION).normalize()
    if not price.is_finite() or price < 0:
        raise ValueError("negative or infinite cost")
    # 2.5e-06 per token is "2.5", not "2.50000000"; whole numbers without exponent.
    return price.quantize(Decimal(1)) if price == price.to_integral() else price


def _litellm_row(
    provider: str, model: str, spec: dict[str, Any], source: str, today: date
) -> PriceRow | None:
    input_price = _per_million(spec.get("input_cost_per_token"))
    output_price = _per_million(spec.get("output_cost_per_token"))
    if input_price is None or output_price is None:
        return None
    tiers: dict[int, dict[str, Decimal | None]] = {}
    for name, value in spec.items():
        match = _TIER.match(name)
        if match:
            tiers.setdefault(int(match.group(2)) * 1000, {})[match.group(1)] = _per_million(value)
    threshold = min(tiers) if tiers else None
    tier = tiers.get(threshold, {}) if threshold else {}
    if tier and (tier.get("input") is None or tier.get("output") is None):
        tier, threshold = {}, None
    deprecation = spec.get("deprecation_date")
    deprecated = bool(deprecation) and str(deprecation)[:10] <= today.isoformat()
    reasoning = _per_million(spec.get("output_cost_per_reasoning_token"))
    return PriceRow(
        provider=provider,
        model=model,
        input_per_mtok=input_price,
        output_per_mtok=output_price,
        cached_input_per_mtok=_per_million(spec.get("cache_read_input_token_cost")),
        cache_write_per_mtok=_per_million(spec.get("cache_creation_input_token_cost")),
        reasoning_per_mtok=reasoning if reasoning != output_price else None,
        context_window=_int(spec.get("max_input_tokens")),
        max_output_tokens=_int(spec.get("max_output_tokens") or spec.get("max_tokens")),
        tier_threshold_tokens=threshold,
        tier_input_per_mtok=tier.get("input"),
        tier_cached_input_per_mtok=tier.get("cache_read_input"),
        tier_cache_write_per_mtok=tier.get("cache_creation_input"),
        tier_output_per_mtok=tier.get("output"),
        source=source,
        deprecated=deprecated,
        unknown=frozenset({"name"}),
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


# --- Writing ---------------------------------------------------------------------


def row_from_model(price: Any) -> PriceRow:
    values = {name: getattr(price, name) for name in ROW_FIELDS}
    values["effective_from"] = price.effective_from.date()
    return PriceRow(**values)


def to_json(rows: list[PriceRow]) -> str:
    return json.dumps([_plain(r) for r in rows], indent=2) + "\n"


def to_csv(rows: list[PriceRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in _plain(row).items()})
    return out.getvalue()


def _plain(row: PriceRow) -> dict[str, Any]:
    values = asdict(row)
    values.pop("unknown")
    for name, value in values.items():
        if isinstance(value, Decimal):
            values[name] = format(value, "f")
        elif isinstance(value, date):
            values[name] = value.isoformat()
    return values


# --- Diff and apply -----------------------------------------------------------------


@dataclass
class PriceDiff:
    added: list[PriceRow] = field(default_factory=list)
    changed: list[tuple[Any, PriceRow]] = field(default_factory=list)  # (current row, new)
    unchanged: list[PriceRow] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)  # current rows the source lacks

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed)


_COMPARED = (
    "name",
    "context_window",
    "max_output_tokens",
    "deprecated",
)


def diff(rows: list[PriceRow], *, provider: str | None = None) -> PriceDiff:
    """Compare a source with the newest row of each model in the database."""
    from pricing.models import ModelPrice

    if provider:
        rows = [r for r in rows if r.provider == provider]
    current_qs = ModelPrice.objects.latest_rows()
    if provider:
        current_qs = current_qs.filter(provider=provider)
    current = {(p.provider, p.model): p for p in current_qs}
    result = PriceDiff()
    for row in rows:
        existing = current.pop((row.provider, row.model), None)
        if existing is None:
            result.added.append(row)
        elif _differs(existing, row):
            result.changed.append((existing, row))
        else:
            result.unchanged.append(row)
    # A provider's fallback price is the operator's own, in no source: never "missing".
    kept = [p for p in current.values() if not p.is_fallback]
    result.missing = sorted(kept, key=lambda p: (p.provider, p.model))
    return result


def _differs(existing: Any, row: PriceRow) -> bool:
    if existing.price_key() != row.price_key():
        return True
    return any(
        getattr(existing, name) != getattr(row, name)
        for name in _COMPARED
        if name not in row.unknown
    )


def apply(result: PriceDiff, *, effective_from: datetime) -> int:
    """Write the added and changed models as new rows in effect from
    `effective_from`, in one transaction. Old rows are never modified."""
    from pricing.models import ModelPrice

    created = 0
    with transaction.atomic():
        for row in result.added:
            _create(ModelPrice, row, effective_from, active=True)
            created += 1
        for existing, row in result.changed:
            if "name" in row.unknown:
                row = replace(row, name=existing.name)
            if existing.effective_from >= effective_from:
                raise PriceSourceError(
                    f"{row.provider}/{row.model} already has a price from "
                    f"{existing.effective_from:%Y-%m-%d %H:%M} on; pick a later "
                    "--effective-from."
                )
            _create(ModelPrice, row, effective_from, active=existing.active)
            created += 1
    return created


def _create(model_cls: Any, row: PriceRow, effective_from: datetime, *, active: bool) -> None:
    values = {name: getattr(row, name) for name in ROW_FIELDS if name != "effective_from"}
    obj = model_cls(**values, effective_from=effective_from, active=active)
    obj.full_clean()
    obj.save()


def load_fixture(model_cls: Any, path: Path = FIXTURE) -> int:
    """Load the shipped price table: only rows the database lacks. Never
    duplicates a row, and never overrides an operator's newer price."""
    rows = parse_json(path.read_text(), source="")
    created = 0
    for row in rows:
        when = datetime.combine(row.effective_from or date(2026, 1, 1), datetime.min.time(), UTC)
        if model_cls.objects.filter(
            provider=row.provider, model=row.model, effective_from__gte=when
        ).exists():
            continue
        values = {name: getattr(row, name) for name in ROW_FIELDS if name != "effective_from"}
        model_cls.objects.create(**values, effective_from=when, active=True)
        created += 1
    return created
