"""The owner's workload: a hardened podman container on gocryptfs storage, set up over SSH.

`config` (the one `WorkloadConfig`, its validators, the hardening) and `requests` (the owner's
signed configure and expose bodies) are plain values the core shares. The adapter behind the
core's `WorkloadManager` port is the rest, imported from its own module: `manager` (the steps,
their persisted phases, recovery; `WorkloadSettings`), `runtime` (podman), `store` (gocryptfs),
`store_key` (where the store key is made and kept), `ssh` (owner-only setup access), `helpers`
(the helper programs measured into RTMR3) and `unavailable` (the manager without a runtime).
"""
