import pytest


@pytest.fixture(scope="session")
def policy():
    """The real SmolLM2-135M-Instruct with a fresh LoRA adapter (converted once, then cached)."""
    from ttrl.backends.causal import CausalBackend
    from ttrl.config import ModelConfig

    return CausalBackend(ModelConfig(), need_reference=True)
