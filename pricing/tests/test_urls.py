from django.urls import get_resolver


def test_the_pricing_namespace_is_installed() -> None:
    assert "pricing" in get_resolver().namespace_dict
