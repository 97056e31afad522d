from decimal import Decimal

from django import template

from llmchat.money import dollars as _dollars

register = template.Library()


@register.filter
def dollars(value: Decimal | None) -> str:
    """An amount of money as the whole site shows it: {{ cost|dollars }} -> $0.00029."""
    return _dollars(value)
