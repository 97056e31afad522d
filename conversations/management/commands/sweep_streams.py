"""Close replies left "generating" by a process that died mid-reply.

A new turn in such a conversation sweeps it too; run this from cron (say every
10 minutes) so that nothing stays "generating" anywhere."""

from typing import Any

from django.core.management.base import BaseCommand

from conversations.turns import sweep_stale_replies


class Command(BaseCommand):
    help = "Mark replies that stopped streaming long ago as partial or failed."

    def handle(self, *args: Any, **options: Any) -> None:
        swept = sweep_stale_replies()
        self.stdout.write(f"Closed {swept} interrupted repl{'y' if swept == 1 else 'ies'}.")
