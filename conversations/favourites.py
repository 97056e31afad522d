"""A user's favourite models, which the model picker lists first. The canonical writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conversations.models import FavouriteModel
from conversations.turns import ChatRefused, check_model

if TYPE_CHECKING:
    from accounts.models import User

MAX_FAVOURITES = 50


def favourite_set(*, user: User, provider: str, model: str, favourite: bool) -> None:
    check_model(provider, model)
    mine = FavouriteModel.objects.filter(user=user)
    if not favourite:
        mine.filter(provider=provider, model=model).delete()
        return
    if mine.count() >= MAX_FAVOURITES:
        raise ChatRefused(400, "too_many", f"Up to {MAX_FAVOURITES} favourite models.")
    FavouriteModel.objects.get_or_create(user=user, provider=provider, model=model)
