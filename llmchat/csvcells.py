"""Cells of the CSV files operators open in a spreadsheet, made safe to open.

A spreadsheet reads a cell that starts with =, +, - or @ as a formula
(=HYPERLINK(...) becomes a live link, =cmd|... runs a command), and some skip
leading blanks first or take the full-width forms of those signs too. Emails, model
names and the like are whatever users typed, so every such cell goes through
`safe_cell`, which puts a ' in front of a risky one: spreadsheets then show the
text as it is. Both the usage report's CSV and `manage.py export_usage` use it;
the export's PostgreSQL path (COPY) applies the same rule with `FORMULA_REGEX`.
"""

from __future__ import annotations

import re

# A cell is risky when it starts with a tab or a line break, or when its first
# character after any blanks is a formula sign. The pattern means the same to
# Python's re and to PostgreSQL's regular expressions (`~`), so that COPY writes
# exactly what the csv writer does.
FORMULA_REGEX = "^([\\t\\r\\n]|[ \\t\\r\\n]*[-=+@\uff1d\uff0b\uff0d\uff20])"
_FORMULA = re.compile(FORMULA_REGEX)


def safe_cell(value: str) -> str:
    """The value, with a ' in front when a spreadsheet would run it as a formula."""
    return f"'{value}" if _FORMULA.match(value) else value


def safe_cell_sql(column: str) -> str:
    """`safe_cell` as a PostgreSQL expression over a text column (NULL stays NULL)."""
    return f"CASE WHEN {column} ~ '{FORMULA_REGEX}' THEN '''' || {column} ELSE {column} END"
