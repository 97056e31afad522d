from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Exists, OuterRef
from django.utils import timezone

from pricing.calculator import Price, Rates

PROVIDER_CHOICES = [
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("google", "Google Gemini"),
    ("compatible", "OpenAI-compatible"),
    ("demo", "Offline demo"),
]

# The fields that make a price: changing any of them makes a new effective row.
PRICE_FIELDS = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
    "tier_threshold_tokens",
    "tier_input_per_mtok",
    "tier_cached_input_per_mtok",
    "tier_cache_write_per_mtok",
    "tier_output_per_mtok",
)

# Dated snapshots are priced like their alias: gpt-4o-2024-08-06 like gpt-4o,
# claude-sonnet-4-5-20250929 like claude-sonnet-4-5.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")

FALLBACK_MODEL = "*"
"""The model id of a provider's fallback price: what its models without a price
of their own cost."""


def _money(**kwargs: Any) -> models.DecimalField:
    return models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(Decimal(0))], **kwargs
    )


class ModelPriceQuerySet(models.QuerySet["ModelPrice"]):
    def in_effect(self, at: datetime | None = None) -> ModelPriceQuerySet:
        """Per (provider, model), the row in effect at `at` (default: now)."""
        at = at or timezone.now()
        newer = ModelPrice.objects.filter(
            provider=OuterRef("provider"),
            model=OuterRef("model"),
            effective_from__gt=OuterRef("effective_from"),
            effective_from__lte=at,
        )
        return self.filter(effective_from__lte=at).exclude(Exists(newer))

    def latest_rows(self) -> ModelPriceQuerySet:
        """Per (provider, model), the newest row, even if it takes effect later."""
        newer = ModelPrice.objects.filter(
            provider=OuterRef("provider"),
            model=OuterRef("model"),
            effective_from__gt=OuterRef("effective_from"),
        )
        return self.exclude(Exists(newer))


class ModelPrice(models.Model):
    """A model's list price from `effective_from` on. A new price is a new row:
    history is kept, and a cost is always computed with the row in effect at the
    time of the call."""

    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    model = models.CharField(
        max_length=200,
        help_text='The id the API takes; "*" is the provider\'s fallback price, for its '
        "models without a price of their own.",
    )
    name = models.CharField(max_length=200, blank=True)
    input_per_mtok = _money(verbose_name="input $/1M")
    cached_input_per_mtok = _money(
        null=True, blank=True, verbose_name="cached input $/1M", help_text="Empty: as input."
    )
    cache_write_per_mtok = _money(
        null=True, blank=True, verbose_name="cache write $/1M", help_text="Empty: as input."
    )
    output_per_mtok = _money(verbose_name="output $/1M")
    reasoning_per_mtok = _money(
        null=True, blank=True, verbose_name="reasoning $/1M", help_text="Empty: as output."
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    tier_threshold_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name="long-context threshold",
        help_text="Prompts of more input tokens than this are billed at the tier prices.",
    )
    tier_input_per_mtok = _money(null=True, blank=True, verbose_name="tier input $/1M")
    tier_cached_input_per_mtok = _money(
        null=True, blank=True, verbose_name="tier cached input $/1M"
    )
    tier_cache_write_per_mtok = _money(null=True, blank=True, verbose_name="tier cache write $/1M")
    tier_output_per_mtok = _money(null=True, blank=True, verbose_name="tier output $/1M")
    effective_from = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=500, blank=True, help_text="URL or note.")
    active = models.BooleanField(default=True, help_text="Offered in the model picker.")
    deprecated = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    objects = ModelPriceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"], name="one_price_per_instant"
            )
        ]
        indexes = [models.Index(fields=["provider", "model", "-effective_from"])]
        ordering = ["provider", "model", "-effective_from"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        tier = [
            self.tier_input_per_mtok,
            self.tier_cached_input_per_mtok,
            self.tier_cache_write_per_mtok,
            self.tier_output_per_mtok,
        ]
        if self.tier_threshold_tokens is None and any(v is not None for v in tier):
            raise ValidationError(
                {"tier_threshold_tokens": "Tier prices need a threshold."}, code="tier"
            )
        if self.tier_threshold_tokens is not None and (
            self.tier_input_per_mtok is None or self.tier_output_per_mtok is None
        ):
            raise ValidationError(
                {"tier_input_per_mtok": "A tier needs input and output prices."}, code="tier"
            )

    def as_price(self) -> Price:
        base = Rates(
            input=self.input_per_mtok,
            output=self.output_per_mtok,
            cached_input=self.cached_input_per_mtok,
            cache_write=self.cache_write_per_mtok,
            reasoning=self.reasoning_per_mtok,
        )
        tier = None
        if (
            self.tier_threshold_tokens is not None
            and self.tier_input_per_mtok is not None
            and self.tier_output_per_mtok is not None
        ):
            tier = Rates(
                input=self.tier_input_per_mtok,
                output=self.tier_output_per_mtok,
                cached_input=self.tier_cached_input_per_mtok,
                cache_write=self.tier_cache_write_per_mtok,
                reasoning=self.reasoning_per_mtok,
            )
        return Price(base=base, tier_threshold=self.tier_threshold_tokens, tier=tier)

    @property
    def is_fallback(self) -> bool:
        return self.model == FALLBACK_MODEL

    def price_key(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in PRICE_FIELDS)


def price_for(provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
    """The price in effect for this model at `at` (default now), or None: unpriced.

    A dated snapshot without a row of its own is priced like its alias; a model
    with neither is priced at its provider's fallback: the admin's row for model
    "*", else the FALLBACK_PRICES setting (an unsaved row). One query.
    """
    return prices_for(provider, [model], at)[model]


def prices_for(
    provider: str, models: Iterable[str], at: datetime | None = None
) -> dict[str, ModelPrice | None]:
    """price_for for each of a provider's models, in one query."""
    candidates = {model: _candidates(model) for model in models}
    wanted = {name for names in candidates.values() for name in names}
    rows = ModelPrice.objects.filter(
        provider=provider, model__in=wanted, effective_from__lte=at or timezone.now()
    ).order_by("-effective_from")
    newest: dict[str, ModelPrice | None] = {}
    for row in rows:
        newest.setdefault(row.model, row)
    if FALLBACK_MODEL not in newest:
        newest[FALLBACK_MODEL] = fallback_from_settings(provider)
    return {
        model: next((newest[name] for name in names if name in newest), None)
        for model, names in candidates.items()
    }


def _candidates(model: str) -> list[str]:
    """The rows that may price a model, in order of preference."""
    alias = _DATE_SUFFIX.sub("", model)
    return [model, alias, FALLBACK_MODEL] if alias != model else [model, FALLBACK_MODEL]


def fallback_from_settings(provider: str) -> ModelPrice | None:
    """The provider's fallback price from the FALLBACK_PRICES setting, as an
    unsaved row (a ledger row refers to no price row then), or None."""
    rates = settings.FALLBACK_PRICES.get(provider)
    if rates is None:
        return None
    return ModelPrice(
        provider=provider,
        model=FALLBACK_MODEL,
        name="Fallback price (FALLBACK_PRICES)",
        input_per_mtok=rates[0],
        output_per_mtok=rates[1],
        effective_from=datetime(1970, 1, 1, tzinfo=UTC),
        source="FALLBACK_PRICES setting",
        active=False,
    )
