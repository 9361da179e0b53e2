"""Every exception of the identity service, in one tree; `http_status` maps them to statuses.

IdentityServiceError
├── StartupError                  the service cannot start; one log line says what to fix
│   ├── InstanceKeyError          instance key file unusable (never silently replaced)
│   ├── StateFileError            state file unreadable (never silently reset)
│   ├── PlatformError             the platform's own quote (for its PPID) unobtainable
│   ├── NoPlatformError           neither configfs-tsm nor a mock TDX URL (also below)
│   ├── NoQuoteSourceError        no usable quote source
│   ├── NoRtmrDeviceError         no usable RTMR3 device (also a MeasurementError)
│   └── FrontRuntimeDirError      the front's directory is not a private tmpfs dir (TD memory)
├── InvalidRequest                malformed body or header (400; also a ValueError)
├── OwnerTokenInvalid             x-token missing or not the issued one (401)
├── TransitionRefused             the lifecycle refuses an action in this state
│   ├── StepOutOfOrder            not now (400)
│   └── NotPermitted              nobody can be authorized for it now (401)
├── StateWriteError               the new state is not durable; the old one holds (500)
├── UnsafeFileError               a private file is a symlink, not regular, too open or big
├── QuoteSourceError              a quote could not be obtained (503)
├── RegistryError                 the registry did not accept a registration or lookup
│   ├── RegistryUnavailable       unreachable, timeout, 5xx, 429 (502)
│   ├── RegistryRejected          a 4xx refusal with a reason (403 or 401)
│   └── RegistryRecordMalformed   the instance's record does not parse (a disagreement)
├── IdentitiesUnconfirmed         lifecycle steps wait for the start-up registry comparison (503)
│   ├── ComparisonPending         the registry has not been reached (or recovery not done) yet
│   └── IdentityDisagreement      the state's operator or owner differs from the registry's
├── MeasurementError              the runtime measurement (RTMR3 and its event log)
│   ├── RtmrDeviceError           RTMR3 cannot be read or extended (503)
│   ├── MeasurementPersistError   the event log cannot be written after its extension (500)
│   ├── EventLogFull              no room for another configure within the log's budget (409)
│   ├── MeasurementStateError     RTMR3 and the log disagree (500; at start: StartupError)
│   ├── HelperMeasurementError    a helper program is missing or unmeasurable (StartupError)
│   └── NoRtmrDeviceError
├── WorkloadAuthError             the request is not the registered owner's (401)
│   └── StaleRequest              a signed body's seq is not above the last accepted (401)
├── WorkloadError                 a WorkloadManager step failed; message shown to the owner
│   ├── WorkloadRejected          cannot be done as asked (400)
│   ├── WorkloadUnavailable       no runtime can serve it now (503)
│   ├── WorkloadLocked            the key broker has not released the store key (503)
│   └── WorkloadFailed            the runtime failed on a valid request (500, logged)
└── WorkloadRuntimeError          inside the workload adapters, turned into WorkloadFailed
    ├── WorkloadConfigError       a workload value is unacceptable (also a ValueError)
    ├── KeyProviderError          the store key cannot be read or created (never the key)
    │   ├── KeyNotFoundError      no key was created yet
    │   ├── StoreKeyUnavailable   the key broker is down, refuses, or answers badly
    │   └── KeyExistsError        a key exists; another would orphan the store
    ├── StoreError                the gocryptfs store cannot init, mount or unmount
    ├── ContainerRuntimeError     a podman operation failed
    │   └── ImageUnavailableError the image is neither local nor pullable
    ├── SshServerError            the SSH setup access cannot start or its key is unusable
    ├── FrontError                the attested front (nginx) cannot be configured or started
    └── ProgramTimeout            a helper program outlived its time limit
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tdx_identity.core.lifecycle import Action, Lifecycle


class IdentityServiceError(Exception):
    """Base of every exception the identity service defines."""


class StartupError(IdentityServiceError):
    """The service cannot start; the message says what to fix. Printed as one log line."""


class InstanceKeyError(StartupError):
    """The instance key file exists but cannot be used; it is never silently replaced."""


class StateFileError(StartupError):
    """The state file exists but cannot be read back; it is never silently reset."""


class PlatformError(StartupError):
    """The platform's own quote (for its PPID) cannot be obtained or read at start-up."""


class NoQuoteSourceError(StartupError):
    """Neither configfs-tsm nor a mock TDX URL is available."""


class FrontRuntimeDirError(StartupError):
    """The front's runtime directory (TLS key, certificate, nginx's files) is not a private
    directory on a tmpfs: the TLS key would reach a disk the host can read."""


class InvalidRequest(IdentityServiceError, ValueError):
    """A request body or header is malformed (HTTP 400)."""


class OwnerTokenInvalid(IdentityServiceError):
    """The `x-token` header is missing or is not the owner token issued to the operator."""


class TransitionRefused(IdentityServiceError):
    """An action cannot happen in a lifecycle state; the message is safe to show the caller."""

    def __init__(self, state: Lifecycle, action: Action, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.action = action
        self.reason = reason


class StepOutOfOrder(TransitionRefused):
    """The action is taken out of order (HTTP 400)."""


class NotPermitted(TransitionRefused):
    """Nobody can be authorized for the action in this state (HTTP 401)."""


class StateWriteError(IdentityServiceError):
    """The new state could not be written durably; the previous state is still in force."""


class UnsafeFileError(IdentityServiceError):
    """A private file is not a regular file, is open to other users, or is too large."""


class QuoteSourceError(IdentityServiceError):
    """A quote could not be obtained; the message names the source and the cause."""


class RegistryError(IdentityServiceError):
    """The registry did not accept a registration."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out, or answered other than 200 or a 4xx refusal
    (5xx, 429, a redirect)."""


class RegistryRejected(RegistryError):
    """The registry refused the registration with a 4xx status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"registry refused the registration (HTTP {status}): {reason}")
        self.status = status
        self.reason = reason


class RegistryRecordMalformed(RegistryError):
    """The registry's record of this instance cannot be parsed; the service counts it as a
    disagreement, never as agreement."""


class IdentitiesUnconfirmed(IdentityServiceError):
    """A lifecycle step is refused until the state's operator and owner are confirmed by the
    registry's record (503 with Retry-After); `retry_after` is the next comparison's delay."""

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ComparisonPending(IdentitiesUnconfirmed):
    """The comparison with the registry has not completed: the registry was not reached yet,
    or the agreed workload is still being recovered."""


class IdentityDisagreement(IdentitiesUnconfirmed):
    """The state file's operator or owner differs from the registry's record (the state may
    have been rewritten on the host's disk); the reason names the role and both key prefixes."""


class MeasurementError(IdentityServiceError):
    """Base of the errors of the service's runtime measurement; the message says what to fix."""


class RtmrDeviceError(MeasurementError):
    """RTMR3 could not be read or extended (kernel interface or simulator failure)."""


class NoRtmrDeviceError(MeasurementError, StartupError):
    """Neither the kernel's RTMR3 file nor a mock TDX URL is available."""


class NoPlatformError(NoQuoteSourceError, NoRtmrDeviceError):
    """No TDX platform at all: neither configfs-tsm nor a mock TDX URL."""


class HelperMeasurementError(MeasurementError, StartupError):
    """A helper program is missing or cannot be measured; `role` names which one."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"helper for role {role!r}: {reason}")
        self.role = role


class MeasurementStateError(MeasurementError, StartupError):
    """RTMR3 and the persisted event log disagree: the log cannot explain the register. Only a
    reboot of the TD (RTMR3 back to zero) clears this; the log is never reset to fit."""


class EventLogFull(MeasurementError):
    """Another configure would grow the RTMR3 event log past its budget, so that registrations
    (which carry the whole log) would exceed the registry's body limit; nothing was changed.
    RTMR3 cannot be reset: a reboot of the TD starts a new log."""

    def __init__(self, size: int, budget: int) -> None:
        super().__init__(
            f"the RTMR3 event log would grow to {size} bytes, over its budget of {budget} bytes "
            "(registrations carry the whole log and the registry limits their size): no more "
            "configures in this boot; reboot the TD to start a new log"
        )
        self.size = size
        self.budget = budget


class MeasurementPersistError(MeasurementError):
    """The event log could not be written after its event was extended; the log in memory
    still explains RTMR3; until a later write succeeds, a restart within this boot refuses
    to continue the file."""


class WorkloadAuthError(IdentityServiceError):
    """The request is not the registered owner's for this instance (401)."""


class StaleRequest(WorkloadAuthError):
    """A signed owner body whose seq is not greater than the last accepted one: a replay or an
    out-of-date request (401); nothing changes."""


class WorkloadError(IdentityServiceError):
    """Base of the errors a WorkloadManager raises; the message is shown to the owner."""


class WorkloadRejected(WorkloadError):
    """The request cannot be carried out as asked, e.g. an image absent and not pullable (400)."""


class WorkloadUnavailable(WorkloadError):
    """No workload runtime can serve the request now (503)."""


class WorkloadLocked(WorkloadError):
    """The key broker has not released the store key (down, refusing, or a bad answer): the
    workload stays stopped and the step needing the key is refused (503); says why."""


class WorkloadFailed(WorkloadError):
    """The runtime failed while carrying out a valid request (500, logged)."""


class WorkloadRuntimeError(IdentityServiceError):
    """Base of the errors inside the workload adapters (podman, gocryptfs, SSH, store key)."""


class WorkloadConfigError(WorkloadRuntimeError, ValueError):
    """A workload setting is not acceptable; the message says which and why."""


class KeyProviderError(WorkloadRuntimeError):
    """The store key cannot be read or created; the message says why (never the key)."""


class KeyNotFoundError(KeyProviderError):
    """No key has been created yet."""


class StoreKeyUnavailable(KeyProviderError):
    """The key broker could not be reached, refused to release the store key, or answered
    with something that is not a 32-byte key; the message says which (never the key), and
    `outcome` names the case for the metrics (`workload.key_broker.FETCH_OUTCOMES`)."""

    def __init__(self, reason: str, *, outcome: str = "unusable") -> None:
        super().__init__(reason)
        self.outcome = outcome


class KeyExistsError(KeyProviderError):
    """A key already exists: creating another would make the store unreadable."""


class StoreError(WorkloadRuntimeError):
    """The encrypted store cannot be initialised, mounted or unmounted; says why."""


class ContainerRuntimeError(WorkloadRuntimeError):
    """A runtime operation failed; `reason` is podman's stderr, summarized."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"podman {operation} failed: {reason}")
        self.operation = operation
        self.reason = reason


class ImageUnavailableError(ContainerRuntimeError):
    """The image is neither in local storage nor pullable."""


class SshServerError(WorkloadRuntimeError):
    """The SSH setup server cannot start, or its host key cannot be used."""


class FrontError(WorkloadRuntimeError):
    """The attested front (nginx) cannot be configured, started or kept running."""


class ProgramTimeout(WorkloadRuntimeError):
    """A helper program did not finish within its time limit (it was killed)."""
