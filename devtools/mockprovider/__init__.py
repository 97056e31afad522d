"""The mock LLM provider: every vendor's wire protocol, for tests and benchmarks."""

from devtools.mockprovider.server import FAULTS, MockConfig, MockProvider, MockProviderThread

__all__ = ["FAULTS", "MockConfig", "MockProvider", "MockProviderThread"]
