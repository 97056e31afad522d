from django.urls import path

from providers import views

app_name = "providers"
urlpatterns = [
    path("", views.keys, name="keys"),
    path("<str:provider>/", views.key_save, name="key-save"),
    path("<str:provider>/delete/", views.key_delete, name="key-delete"),
]
