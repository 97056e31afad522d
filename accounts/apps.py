from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    # "Users", not "Accounts": allauth's email addresses are an admin section called Accounts.
    verbose_name = "Users"
