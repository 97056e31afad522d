"""Cells of the CSV files operators open in a spreadsheet, made safe to open.

A spreadsheet reads a cell that starts with =, +, - or @ as a formula
(=HYPERLINK(...) becomes a live link, =cmd|... runs a command), and some skip
leading blanks first or take the full-width forms of those signs too. Emails, model
names and the like are whatever users typed, so every such cell goes through
`safe_cell`, which puts a ' in front of a risky one: spreadsheets then show the
text as it is. Both the usage report's CSV and `manage.py export_usage` use it.
"""

from __future__ import annotations

import re

_SIGNS = "-=+@\uff1d\uff0b\uff0d\uff20"  # "-" first: literal in a [...] set
# A cell is risky when it starts with a tab or a line break, or when its first
# character after any blanks is a formula sign.
_FORMULA = re.compile(f"^([\\t\\r\\n]|[ \\t\\r\\n]*[{_SIGNS}])")
# The first characters of every risky cell: any other rules a cell out at once.
_FIRST = frozenset(" \t\r\n" + _SIGNS)


def safe_cell(value: str) -> str:
    """The value, with a ' in front when a spreadsheet would run it as a formula."""
    return f"'{value}" if value[:1] in _FIRST and _FORMULA.match(value) else value
