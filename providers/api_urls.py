from django.urls import path

from providers import api

urlpatterns = [
    path("keys", api.key_list, name="api-keys"),
    path("keys/<str:provider>", api.key_detail, name="api-key"),
    path("keys/<str:provider>/test", api.key_test, name="api-key-test"),
]
