"""Load the shipped price table (pricing/fixtures/prices.json): only the rows the
database lacks, so it never duplicates a row or overrides an operator's newer price.
A release that updates the fixture adds another migration like this one."""

from django.db import migrations


def load(apps, schema_editor):
    from pricing.sources import load_fixture

    load_fixture(apps.get_model("pricing", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("pricing", "0001_initial")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
