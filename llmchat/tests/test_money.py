"""One way to show money on every page and in the admin (llmchat.money)."""

from decimal import Decimal

import pytest

from llmchat.money import dollars


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0.000290", "$0.00029"),  # a cheap reply keeps its digits
        ("0.002800", "$0.0028"),
        ("10.000000", "$10.00"),  # a round sum reads as money
        ("0", "$0.00"),
        ("1.5", "$1.50"),
        ("1234567.891", "$1,234,567.891"),
        ("0.0000004", "<$0.000001"),  # not zero, below a micro-dollar
        ("0.0000005", "$0.000001"),  # half up
        ("-0.25", "-$0.25"),
        (None, "—"),
    ],
)
def test_the_rule(amount: str | None, shown: str) -> None:
    assert dollars(Decimal(amount) if amount is not None else None) == shown


def test_the_template_filter_follows_it() -> None:
    from django.template import engines

    template = engines["django"].from_string("{% load money %}{{ cost|dollars }}")
    assert template.render({"cost": Decimal("0.000290")}) == "$0.00029"
