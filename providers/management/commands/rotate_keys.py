"""Re-encrypt every stored provider key with the current SECRET_KEY.

After changing SECRET_KEY, put the old one in SECRET_KEY_FALLBACKS, deploy, run
this, then drop the fallback. Keys that no key can decrypt are reported and left
as they are (their owners must save them again).
"""

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from providers.fields import UnreadableSecret
from providers.models import ProviderKey


class Command(BaseCommand):
    help = "Re-encrypt all stored provider API keys with the current SECRET_KEY."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be re-encrypted."
        )

    def handle(self, *args: Any, dry_run: bool = False, **options: Any) -> None:
        rotated = unreadable = 0
        for pk in ProviderKey.objects.order_by("pk").values_list("pk", flat=True).iterator():
            with transaction.atomic():
                record = ProviderKey.objects.select_for_update().get(pk=pk)
                if isinstance(record.key, UnreadableSecret):
                    unreadable += 1
                    self.stderr.write(
                        f"Key {record.pk} ({record.provider}, user {record.user_id}) "
                        "cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS; "
                        "left unchanged."
                    )
                    continue
                if not dry_run:
                    # Saving encrypts with the first (current) key.
                    record.save(update_fields=["key"])
                rotated += 1
        verb = "Would re-encrypt" if dry_run else "Re-encrypted"
        self.stdout.write(f"{verb} {rotated} key(s); {unreadable} could not be read.")
        if unreadable:
            raise SystemExit(1)
