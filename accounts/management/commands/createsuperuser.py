"""Django's createsuperuser, with the new superuser's email address marked verified.

With ACCOUNT_EMAIL_VERIFICATION=mandatory (production's default) allauth signs in
only users whose address is verified, and verifying takes a mail: a superuser made
before mail works would be stopped at "Verify your email" with no way forward. The
operator typed the address on the server itself, which is verification enough.

This app comes before django.contrib.auth in INSTALLED_APPS, so that this command
is the one `manage.py createsuperuser` runs.
"""

from __future__ import annotations

import os
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth.management.commands import createsuperuser

from accounts.models import User


class Command(createsuperuser.Command):
    help = "Create a superuser, with the email address marked verified (a primary address)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.typed_email: str | None = None
        super().handle(*args, **options)
        # The address as Django's command took it: typed at the prompt, else the
        # --email option, else DJANGO_SUPERUSER_EMAIL (with --noinput).
        email = (
            self.typed_email
            or options[User.USERNAME_FIELD]
            or os.environ.get(f"DJANGO_SUPERUSER_{User.USERNAME_FIELD.upper()}")
        )
        if email:
            self.verify(User.objects.normalize_email(email), options)

    def get_input_data(self, field: Any, message: str, default: str | None = None) -> Any:
        value = super().get_input_data(field, message, default)
        if field is self.username_field and value:
            self.typed_email = value
        return value

    def verify(self, email: str, options: dict[str, Any]) -> None:
        database = options["database"]
        user = User.objects.db_manager(database).filter(email=email).first()
        if user is None:  # not created (skipped when stdin is not a terminal)
            return
        address, _ = EmailAddress.objects.db_manager(database).get_or_create(
            user=user, email=email.lower()
        )
        if not address.set_verified():
            # Another account has verified this address (allauth's unique email).
            self.stderr.write(f"{email} is verified by another account: not marked verified.")
            return
        address.set_as_primary()
        if options["verbosity"] >= 1:
            self.stdout.write(f"{email} is marked verified: it can sign in without a mail.")
