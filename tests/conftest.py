import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in float64 so that 'same function' comparisons are not blurred by float32 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
