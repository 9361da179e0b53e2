"""HTTP routes of the registry, one blueprint per concern."""

from .instance import instance_blueprint
from .register import register_blueprint

__all__ = ["instance_blueprint", "register_blueprint"]
