"""HTTP routes of the identity service, one blueprint per concern."""

from tdx_identity.routes.instance import instance_bp
from tdx_identity.routes.registration import registration_bp
from tdx_identity.routes.workload import workload_bp

__all__ = ["instance_bp", "registration_bp", "workload_bp"]
