"""How an amount of US dollars reads to a person, everywhere on the site and in the
admin (static/js/chat.js `money()` follows the same rule for what it adds live).

Costs are kept to the micro-dollar. Shown: to the micro-dollar, with the trailing
zeros dropped but never fewer than two places, so a cheap reply keeps its digits
($0.00029) and a round sum reads as money ($10.00, $0.00); thousands are grouped.
An amount too small for a micro-dollar, yet not zero, reads "<$0.000001"."""

from decimal import ROUND_HALF_UP, Decimal

MICRO_DOLLAR = Decimal("0.000001")


def dollars(value: Decimal | int | str | None) -> str:
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    shown = amount.quantize(MICRO_DOLLAR, rounding=ROUND_HALF_UP)
    if shown == 0 and amount != 0:
        return ("-" if amount < 0 else "") + "<$0.000001"
    whole, _, places = f"{abs(shown):f}".partition(".")
    places = places.rstrip("0").ljust(2, "0")
    sign = "-" if shown < 0 else ""
    return f"{sign}${int(whole):,}.{places}"
