"""Model parameters per conversation: checked per provider, sent through the
adapters as each vendor takes them, kept for the next turns, shown on the reply."""

from typing import Any

import pytest

from conversations import parameters
from conversations.models import Conversation, Message
from conversations.tests.helpers import chat
from providers import keys, registry

KEYS = {
    "openai": "sk-test-openai-key-000000000000abcd",
    "anthropic": "sk-ant-test-anthropic-key-00000000abcd",
    "google": "AIzaSy-test-google-key-000000000abcd",
}
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "google": "gemini-2.5-flash"}


@pytest.mark.parametrize(
    ("provider", "raw", "field"),
    [
        ("openai", {"temperature": 2.5}, "parameters.temperature"),
        ("anthropic", {"temperature": 1.5}, "parameters.temperature"),  # Anthropic: 0 to 1
        ("openai", {"temperature": True}, "parameters.temperature"),
        ("openai", {"max_output_tokens": 0}, "parameters.max_output_tokens"),
        ("openai", {"max_output_tokens": 1.5}, "parameters.max_output_tokens"),
        ("openai", {"reasoning_effort": "extreme"}, "parameters.reasoning_effort"),
        ("anthropic", {"reasoning_effort": "high"}, "parameters.reasoning_effort"),
        ("openai", {"thinking_budget": 2048}, "parameters.thinking_budget"),
        ("anthropic", {"thinking_budget": 512}, "parameters.thinking_budget"),  # at least 1,024
        # Anthropic counts thinking within the output tokens.
        (
            "anthropic",
            {"thinking_budget": 4096, "max_output_tokens": 2000},
            "parameters.thinking_budget",
        ),
        ("openai", {"top_k": 3}, "parameters.top_k"),
    ],
)
def test_what_a_provider_does_not_take_is_refused(provider: str, raw: Any, field: str) -> None:
    with pytest.raises(parameters.InvalidParameter) as refused:
        parameters.clean(registry.get(provider), raw, None)
    assert refused.value.field == field


def test_what_it_takes_is_kept_and_empty_values_are_unset() -> None:
    openai = registry.get("openai")
    raw = {
        "temperature": 0,
        "max_output_tokens": 500,
        "reasoning_effort": "high",
        "thinking_budget": "",
    }
    assert parameters.clean(openai, raw, None) == {
        "temperature": 0.0,
        "max_output_tokens": 500,
        "reasoning_effort": "high",
    }
    google = registry.get("google")
    assert parameters.clean(google, {"thinking_budget": 0}, None) == {"thinking_budget": 0}


def test_a_conversation_moved_to_another_provider_keeps_what_that_one_takes() -> None:
    saved = {"temperature": 1.5, "reasoning_effort": "low", "max_output_tokens": 300}
    assert parameters.carried(registry.get("anthropic"), saved, None) == {"max_output_tokens": 300}


@pytest.fixture
def saved_keys(alice: Any, mock_provider: Any, prices: None) -> None:
    for provider, key in KEYS.items():
        keys.provider_key_save(user=alice, provider=provider, key=key)


@pytest.fixture
async def signed_in(async_client: Any, alice: Any, saved_keys: None) -> Any:
    await async_client.aforce_login(alice)
    return async_client


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("provider", "set_", "sent"),
    [
        (
            "openai",
            {"temperature": 0.2, "max_output_tokens": 256, "reasoning_effort": "low"},
            {"temperature": 0.2, "max_output_tokens": 256, "reasoning": {"effort": "low"}},
        ),
        (
            "anthropic",
            {"temperature": 0.5, "max_output_tokens": 3000, "thinking_budget": 2048},
            {
                "temperature": 0.5,
                "max_tokens": 3000,
                "thinking": {"type": "enabled", "budget_tokens": 2048},
            },
        ),
        (
            "google",
            {"temperature": 0.3, "max_output_tokens": 100, "thinking_budget": 512},
            {
                "generationConfig": {
                    "temperature": 0.3,
                    "maxOutputTokens": 100,
                    "thinkingConfig": {"thinkingBudget": 512},
                }
            },
        ),
    ],
)
async def test_parameters_go_to_the_provider_stay_with_the_conversation_and_show_on_the_reply(
    signed_in: Any, mock_provider: Any, provider: str, set_: Any, sent: Any
) -> None:
    mock_provider.configure(reply="Tuned.")
    _, events = await chat(signed_in, provider=provider, model=MODELS[provider], parameters=set_)
    assert events[-1][0] == "done", events[-1]
    assert events[-1][1]["parameters"] == set_
    body = mock_provider.requests[-1].body
    for name, value in sent.items():
        if isinstance(value, dict) and name == "generationConfig":
            for inner, v in value.items():
                got = body[name][inner]
                if inner == "thinkingConfig":  # the SDK writes the proto's field name
                    got = {"thinkingBudget": got.get("thinkingBudget", got.get("thinking_budget"))}
                assert got == v, (inner, body[name])
        else:
            assert body[name] == value, (name, body)
    # The next turn, without parameters, uses the conversation's.
    conversation = events[0][1]["conversation"]
    _, again = await chat(
        signed_in, provider=provider, model=MODELS[provider], conversation=conversation
    )
    assert again[-1][1]["parameters"] == set_
    saved = await Conversation.objects.aget(pk=conversation)
    assert saved.parameters == set_
    # Sending {} clears them.
    _, cleared = await chat(
        signed_in,
        provider=provider,
        model=MODELS[provider],
        conversation=conversation,
        parameters={},
    )
    assert cleared[-1][1]["parameters"] == {}
    assert [
        m.parameters async for m in Message.objects.filter(role="assistant").order_by("id")
    ] == [
        set_,
        set_,
        {},
    ]


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_a_bad_parameter_is_a_400_and_nothing_is_saved(signed_in: Any) -> None:
    response, _ = await chat(
        signed_in, provider="openai", model="gpt-4o", parameters={"temperature": 9}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "parameters.temperature"
    assert "0 to 2" in error["message"]
    assert not await Message.objects.aexists()
    response, _ = await chat(signed_in, provider="openai", model="gpt-4o", parameters="hot")
    assert response.status_code == 400
