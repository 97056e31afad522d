#!/usr/bin/env python
import os
import sys

HINT = (
    "manage.py reads the site's settings (from the environment or .env): set DEBUG=true "
    'for development (make run does), or the production values; see README.md, "Configuration".'
)


def asks_for_help(args: list[str]) -> bool:
    """Whether the command line asks only for help (or the version), which runs nothing."""
    if "--" in args:  # what follows is the command's own arguments
        args = args[: args.index("--")]
    if not args or args[0] in ("help", "version", "--version"):
        return True
    return "-h" in args or "--help" in args


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    args = sys.argv[1:]
    if not any(arg.startswith("--settings") for arg in args):
        try:
            settings.INSTALLED_APPS  # noqa: B018  (loads the settings, which may refuse)
        except ImproperlyConfigured as error:
            if not asks_for_help(args):
                sys.exit(f"{error}\n{HINT}")
            # Help prints the commands and their options, then exits: development
            # settings do for that, and the refusal still stops every real command.
            os.environ["DEBUG"] = "true"
            try:
                settings.INSTALLED_APPS  # noqa: B018
            except ImproperlyConfigured as error:
                sys.exit(f"{error}\n{HINT}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
