"""The systemd units of deploy/systemd: `systemd-analyze verify` prints nothing for any of them,
their `systemd-analyze security` exposure is the one deploy/systemd/README.md states, every
flag and variable they (and their environment file examples) name is one the program's
`--help` lists, the identity unit keeps what it must for the front's adoption, and the registry
and the broker serve under their units' system call filter, socket families and W^X memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_service_kit.testing import Program, free_port, installed_program, running

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "systemd"
README = DEPLOY / "README.md"
INSTALL_BIN = "/usr/local/bin"
ANALYZE_TIMEOUT = 120


@dataclass(frozen=True)
class Unit:
    name: str
    program: str
    help_argv: tuple[str, ...]

    @property
    def path(self) -> Path:
        return DEPLOY / self.name

    @property
    def env_example(self) -> Path:
        return DEPLOY / self.name.replace(".service", ".env.example")


UNITS = (
    Unit("tdx-identity.service", "identity-svc", ("--help",)),
    Unit("tdx-registry.service", "tdx-registry", ("serve", "--help")),
    Unit("tdx-kbs.service", "tdx-kbs", ("--help",)),
)
IDS = [unit.name for unit in UNITS]

# Every option that gives the service its own mount namespace. A FUSE mount (the gocryptfs
# clear view) or a container's overlay made inside one stays there: a restart would not find
# them, so the identity unit has none of these (deploy/systemd/README.md, "tdx-identity.service:
# root, and why the usual lines are left out").
MOUNT_NAMESPACE_OPTIONS = frozenset(
    {
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "MountFlags",
        "MountAPIVFS",
        "DynamicUser",
    }
)


def directives(text: str) -> dict[str, list[str]]:
    """Each `Key=value` of a unit or environment file, every value of a repeated key in order."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not on PATH: scripts/setup installs systemd")
    return found


def resolvable_copy(unit: Unit, directory: Path, text: str | None = None) -> Path:
    """The unit, its ExecStart program moved from /usr/local/bin to this environment's."""
    text = unit.path.read_text() if text is None else text
    installed = f"ExecStart={INSTALL_BIN}/{unit.program}"
    assert installed in text, f"{unit.name}: ExecStart is not {INSTALL_BIN}/{unit.program}"
    copy = directory / unit.name
    copy.write_text(text.replace(installed, f"ExecStart={installed_program(unit.program)}"))
    return copy


def analyze(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *argv],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
        check=False,
    )


def verify_output(path: Path) -> tuple[int, str]:
    """`systemd-analyze verify`'s exit status and everything it printed."""
    done = analyze("verify", str(path))
    return done.returncode, (done.stdout + done.stderr).strip()


EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d) ([A-Z]+)")


def exposure(path: Path) -> tuple[str, str]:
    done = analyze("security", "--offline=yes", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    match = EXPOSURE.search(done.stdout + done.stderr)
    assert match is not None, done.stdout + done.stderr
    assert match.group(1) == path.name
    return match.group(2), match.group(3)


README_SCORE = re.compile(r"^\| `(tdx-[a-z-]+\.service)` \| (\d+\.\d) ([A-Z]+) \|", re.M)


def readme_scores() -> dict[str, tuple[str, str]]:
    return {m.group(1): (m.group(2), m.group(3)) for m in README_SCORE.finditer(README.read_text())}


@pytest.mark.parametrize("unit", UNITS, ids=IDS)
def test_verify_prints_nothing(unit: Unit, tmp_path: Path) -> None:
    rc, output = verify_output(resolvable_copy(unit, tmp_path))
    assert (rc, output) == (0, "")


@pytest.mark.parametrize("unit", UNITS, ids=IDS)
def test_verify_would_report_a_mistake(unit: Unit, tmp_path: Path) -> None:
    """The check above is live: a misspelt directive (only a warning, exit 0) and a missing
    program both print something, so either fails test_verify_prints_nothing."""
    text = unit.path.read_text()
    assert "\nNoNewPrivileges=yes\n" in text
    misspelt = resolvable_copy(
        unit, tmp_path, text.replace("\nNoNewPrivileges=yes\n", "\nNoNewPrivilege=yes\n")
    )
    rc, output = verify_output(misspelt)
    assert rc == 0
    assert "Unknown key 'NoNewPrivilege'" in output

    missing = tmp_path / "missing" / unit.name
    missing.parent.mkdir()
    missing.write_text(text.replace(f"{INSTALL_BIN}/{unit.program}", str(tmp_path / "nothing")))
    rc, output = verify_output(missing)
    assert rc != 0
    assert "is not executable" in output


@pytest.mark.parametrize("unit", UNITS, ids=IDS)
def test_security_exposure_is_the_readme_figure(unit: Unit, tmp_path: Path) -> None:
    scores = readme_scores()
    assert unit.name in scores, f"README.md has no exposure row for {unit.name}"
    assert exposure(resolvable_copy(unit, tmp_path)) == scores[unit.name]


def test_registry_and_broker_are_rated_ok() -> None:
    """The two services without root needs reach systemd's best band (below 2.0, OK)."""
    scores = readme_scores()
    for name in ("tdx-registry.service", "tdx-kbs.service"):
        score, band = scores[name]
        assert band == "OK", name
        assert float(score) < 2.0, name


@pytest.mark.parametrize("unit", UNITS, ids=IDS)
def test_flags_and_variables_are_the_programs(unit: Unit) -> None:
    """Every --flag of ExecStart and every variable the unit or its example sets is one the
    program's --help names, or one the unit's ExecStart substitutes itself."""
    help_text = subprocess.run(
        [installed_program(unit.program), *unit.help_argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    unit_keys = directives(unit.path.read_text())
    (exec_start,) = unit_keys["ExecStart"]
    for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", exec_start):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), flag
    substituted = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", exec_start))

    set_by_unit: set[str] = set()
    for value in unit_keys.get("Environment", []):
        set_by_unit.update(item.partition("=")[0] for item in value.split())
    assert substituted <= set_by_unit, "ExecStart substitutes a variable the unit gives no default"

    example = unit.env_example.read_text()
    in_example = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.M))
    assert substituted <= in_example, "the example does not show the ExecStart variables"
    for name in (set_by_unit | in_example) - substituted:
        assert re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", help_text), (
            f"{unit.name}: {name} is not a variable {unit.program} reads"
        )


def test_environment_files_are_the_examples_installed() -> None:
    """Each unit reads its environment from the file its example says to install."""
    for unit in UNITS:
        (environment_file,) = directives(unit.path.read_text())["EnvironmentFile"]
        first = unit.env_example.read_text().splitlines()[0]
        assert first.startswith(f"# {environment_file} "), unit.name


def test_identity_unit_leaves_the_front_serving_across_restarts() -> None:
    """KillMode=process: a stop or restart signals identity-svc only, so the container, the
    gocryptfs daemon and the attested nginx front keep serving for the next start to adopt; the
    clear view's runtime directory survives the stop; and no option gives the service its own
    mount namespace, where the clear view and the container's mounts would be left behind."""
    keys = directives((DEPLOY / "tdx-identity.service").read_text())
    assert keys["KillMode"] == ["process"]
    assert keys["RuntimeDirectory"] == ["tdx-identity"]
    assert keys["RuntimeDirectoryPreserve"] == ["yes"]
    assert keys.keys().isdisjoint(MOUNT_NAMESPACE_OPTIONS), sorted(
        keys.keys() & MOUNT_NAMESPACE_OPTIONS
    )
    assert "User" not in keys  # root: podman, FUSE mounts and nginx's master need it


# The registry's and the broker's SystemCallFilter=, RestrictAddressFamilies= and
# MemoryDenyWriteExecute= outside systemd (no systemd as PID 1 here): Debian's Python with
# libseccomp's binding (python3-seccomp, scripts/setup) loads the same seccomp filter systemd 252
# builds for those lines, then execs the program, which keeps it. The groups come from
# `systemd-analyze syscall-filter`; any other call fails with EPERM, as SystemCallErrorNumber=
# (a refused socket family too, where systemd answers EAFNOSUPPORT).
SYSTEM_PYTHON = "/usr/bin/python3"
SANDBOX = """
import errno, mmap, os, socket, subprocess, sys
import seccomp

def calls(group):
    out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                         capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item.startswith("@"):
            found |= calls(item)
        elif item and not item.startswith("#"):
            found.add(item)
    return found

ALLOW, Arg, MASKED_EQ, EQ = seccomp.ALLOW, seccomp.Arg, seccomp.MASKED_EQ, seccomp.EQ
WX = mmap.PROT_WRITE | mmap.PROT_EXEC
SHM_EXEC = 0o100000
allowed = calls("@system-service") - calls("@privileged") - calls("@resources")
conditional = {"socket", "mmap", "mprotect", "pkey_mprotect", "shmat"} & allowed
sandbox = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in sorted(allowed - conditional):
    try:
        sandbox.add_rule(ALLOW, name)
    except (RuntimeError, ValueError, OSError):  # not a system call of this architecture
        pass
for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):  # RestrictAddressFamilies=
    sandbox.add_rule(ALLOW, "socket", Arg(0, EQ, family))
for prot in (0, mmap.PROT_WRITE, mmap.PROT_EXEC):  # MemoryDenyWriteExecute=: never W and X
    sandbox.add_rule(ALLOW, "mmap", Arg(2, MASKED_EQ, WX, prot))
for name in conditional & {"mprotect", "pkey_mprotect"}:  # nor X added later
    sandbox.add_rule(ALLOW, name, Arg(2, MASKED_EQ, mmap.PROT_EXEC, 0))
if "shmat" in conditional:
    sandbox.add_rule(ALLOW, "shmat", Arg(2, MASKED_EQ, SHM_EXEC, 0))
sandbox.load()
os.execv(sys.argv[1], sys.argv[1:])
"""
PROBE = """
import mmap, os, socket
def attempt(what, call):
    try:
        call()
    except PermissionError:
        print(what, "refused")
    else:
        print(what, "allowed")
attempt("wx", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
attempt("rw", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE))
attempt("chroot", lambda: os.chroot("/"))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())
attempt("inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
"""


def sandboxed(*argv: str) -> list[str]:
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        pytest.fail(
            f"{SYSTEM_PYTHON} cannot import seccomp: scripts/setup installs python3-seccomp"
        )
    return [SYSTEM_PYTHON, "-c", SANDBOX, *argv]


def probe(argv: list[str]) -> dict[str, str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return dict(line.split() for line in done.stdout.splitlines())


def test_the_sandbox_is_the_units_filter() -> None:
    """The control for the test below: the sandbox refuses a W+X mapping, a privileged call and
    a netlink socket, and allows what a service does; without it all of them pass."""
    assert probe([sys.executable, "-c", PROBE]) == {
        "wx": "allowed",
        "rw": "allowed",
        "chroot": "allowed",
        "netlink": "allowed",
        "inet": "allowed",
    }
    assert probe(sandboxed(sys.executable, "-c", PROBE)) == {
        "wx": "refused",
        "rw": "allowed",
        "chroot": "refused",
        "netlink": "refused",
        "inet": "allowed",
    }


def test_registry_and_broker_serve_under_the_units_filter(tmp_path: Path) -> None:
    """Their SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute= hold: in
    the sandbox, the registry hands out a challenge (Pony, SQLite, its log key) and the broker,
    whose start compiles the shipped Rego policy (regopy), opens an auth session."""
    admin_pem = tmp_path / "admin.pub.pem"
    admin_pem.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    registry_port, kbs_port = free_port(), free_port()
    registry = Program(
        "tdx-registry",
        sandboxed(
            installed_program("tdx-registry"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(registry_port),
        ),
        {
            **os.environ,
            "REGISTRY_DB_PATH": str(tmp_path / "registry.db"),
            "REGISTRY_LOG_KEY_PATH": str(tmp_path / "registry-log.key"),
            "REGISTRY_ANY_MEASUREMENT": "1",
        },
        f"http://127.0.0.1:{registry_port}",
        "/instance/" + "00" * 32,
        tmp_path / "registry.log",
    )
    kbs = Program(
        "tdx-kbs",
        sandboxed(installed_program("tdx-kbs")),
        {
            **os.environ,
            "KBS_HOST": "127.0.0.1",
            "KBS_PORT": str(kbs_port),
            "KBS_DB_PATH": str(tmp_path / "kbs.db"),
            "KBS_STORAGE_KEY_PATH": str(tmp_path / "storage.key"),
            "KBS_ADMIN_PUBKEY": str(admin_pem),
            "KBS_ANY_MEASUREMENT": "1",
        },
        f"http://127.0.0.1:{kbs_port}",
        "/kbs/v0/",
        tmp_path / "kbs.log",
    )
    with running(registry, kbs):
        with urllib.request.urlopen(f"{registry.url}/challenge", timeout=10) as answer:
            assert answer.status == 200
            assert len(json.load(answer)["nonce"]) == 64
        request = urllib.request.Request(
            f"{kbs.url}/kbs/v0/auth",
            data=json.dumps({"version": "0.4.0", "tee": "tdx", "extra-params": ""}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert json.load(answer)["nonce"]
