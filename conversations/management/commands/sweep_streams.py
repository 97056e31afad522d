"""Close replies left "generating" by a process that died mid-stream.

The chat also sweeps a conversation when it is opened or written to; run this from
cron (say every 10 minutes) so that nothing stays "generating" anywhere."""

from typing import Any

from django.core.management.base import BaseCommand

from conversations.services import sweep_stale_streams


class Command(BaseCommand):
    help = "Mark replies that stopped streaming long ago as partial or failed."

    def handle(self, *args: Any, **options: Any) -> None:
        swept = sweep_stale_streams()
        self.stdout.write(f"Closed {swept} interrupted repl{'y' if swept == 1 else 'ies'}.")
