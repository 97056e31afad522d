from django.urls import URLPattern

app_name = "pricing"
# The public price list arrives with the pricing issue.
urlpatterns: list[URLPattern] = []
