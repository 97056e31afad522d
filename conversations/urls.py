from django.urls import path

from conversations import views

app_name = "conversations"
urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<int:pk>/", views.chat, name="conversation"),
    path("usage/", views.usage, name="usage"),
]
