import itertools

import pytest
from hypothesis import settings

settings.register_profile("kit", max_examples=60, deadline=None)
settings.load_profile("kit")

_names = itertools.count()


@pytest.fixture
def app_name() -> str:
    """Sanic app names must be unique per process."""
    return f"kit-test-{next(_names)}"
