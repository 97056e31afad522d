import pytest


@pytest.fixture(autouse=True)
def _prices(prices: None) -> None:
    pass
