from django.urls import path

from conversations import views
from llmchat import converters  # noqa: F401  (registers <id:...>)

app_name = "conversations"
urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<id:pk>/", views.chat, name="conversation"),
    path("usage/", views.usage, name="usage"),
]
