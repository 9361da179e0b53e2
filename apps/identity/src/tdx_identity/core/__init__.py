"""The core of the identity service: the lifecycle, the persisted state, the instance key, the
RTMR3 measurement log and the service's operations (`IdentityService`).

It knows the outside world only through the small interfaces in `ports`; it imports no
adapter (platform, registry client, podman, gocryptfs, SSH) and no web framework. Only the
workload's value types (`workload.config`) and the owner's request parsing
(`workload.requests`) are shared with the workload side, both free of I/O.
"""
