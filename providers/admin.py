from django.contrib import admin
from django.http import HttpRequest

from providers.models import ProviderKey


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin):
    """Keys are the users' own: staff see them masked and may delete them, never
    read or edit them. The encrypted field is left out entirely, because a form
    over it would render the decrypted key into the page."""

    list_display = ["user", "provider", "masked", "base_url", "created", "last_used"]
    list_filter = ["provider"]
    search_fields = ["user__email"]
    list_select_related = ["user"]
    fields = ("user", "provider", "masked", "base_url", "created", "updated", "last_used")
    readonly_fields = fields
    exclude = ["key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
