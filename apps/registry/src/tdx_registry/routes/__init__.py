"""HTTP routes of the registry, one blueprint per concern."""

from .challenge import challenge_blueprint
from .instance import instance_blueprint
from .log import log_blueprint
from .register import register_blueprint

__all__ = ["challenge_blueprint", "instance_blueprint", "log_blueprint", "register_blueprint"]
