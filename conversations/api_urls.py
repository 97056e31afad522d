from django.urls import path

from conversations import api
from llmchat import converters  # noqa: F401  (registers <id:...>)

urlpatterns = [
    path("chat", api.chat, name="api-chat"),
    path("chat/estimate", api.chat_estimate, name="api-chat-estimate"),
    path("chat/<id:message_id>/events", api.chat_events, name="api-chat-events"),
    path("chat/<id:message_id>/stop", api.chat_stop, name="api-chat-stop"),
    path("conversations", api.conversation_list, name="api-conversations"),
    path("conversations/<id:pk>", api.conversation_detail, name="api-conversation"),
    path("conversations/<id:pk>/export", api.conversation_export, name="api-conversation-export"),
    path("models", api.model_list, name="api-models"),
    path("models/favourites", api.model_favourite, name="api-model-favourite"),
    path("models/<str:provider>/listed", api.model_listing, name="api-model-listing"),
    path("usage", api.usage, name="api-usage"),
    path("presets", api.preset_list, name="api-presets"),
    path("presets/<id:pk>", api.preset_detail, name="api-preset"),
]
