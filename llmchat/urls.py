from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "llmchat administration"
admin.site.site_title = "llmchat admin"
# Staff sign in through allauth's login, so the admin gets the same rate limits
# and enumeration protection as the rest of the site.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

handler400 = "llmchat.api.bad_request"
handler403 = "llmchat.api.permission_denied"
handler404 = "llmchat.api.page_not_found"
handler500 = "llmchat.api.server_error"

urlpatterns = [
    path("", include("conversations.urls")),
    path("keys/", include("providers.urls")),
    path("api/", include("providers.api_urls")),
    path("api/", include("conversations.api_urls")),
    path("prices/", include("pricing.urls")),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
