"""The layout holds: the core imports no adapter and no framework, an adapter imports from the
core only its ports, and `app.py` is the one module that knows both the settings and the
adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tdx_identity

PACKAGE = Path(tdx_identity.__file__).parent
SHARED = ("tdx_identity.exceptions", "tdx_identity.files")
CORE_MAY_USE = (*SHARED, "tdx_identity.workload.config", "tdx_identity.workload.requests")
ADAPTERS = ("platform", "registry_client.py", "workload")
FRAMEWORKS = ("sanic", "httpx", "asyncssh", "tdx_service_kit")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved, TYPE_CHECKING ones included."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module is not None:
                found.add(node.module)
    return found


def modules_under(*names: str) -> list[Path]:
    paths: list[Path] = []
    for name in names:
        target = PACKAGE / name
        paths.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return paths


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", modules_under("core"), ids=lambda p: p.name)
def test_the_core_imports_no_adapter_and_no_framework(path: Path) -> None:
    ours = {m for m in imports_of(path) if within(m, ("tdx_identity",))}
    assert all(within(m, ("tdx_identity.core", *CORE_MAY_USE)) for m in ours), ours
    assert not any(within(m, FRAMEWORKS) for m in imports_of(path))


@pytest.mark.parametrize("path", modules_under(*ADAPTERS), ids=lambda p: module_name(p))
def test_an_adapter_imports_from_the_core_only_its_ports(path: Path) -> None:
    core = {m for m in imports_of(path) if within(m, ("tdx_identity.core",))}
    assert core <= {"tdx_identity.core.ports"}, core


def test_the_core_loads_no_adapter_through_the_workload_package() -> None:
    """The core imports `workload.config`, which runs `workload/__init__.py` first."""
    package = imports_of(PACKAGE / "workload" / "__init__.py")
    assert not {m for m in package if within(m, ("tdx_identity",))}


def test_only_app_knows_both_the_settings_and_the_adapters() -> None:
    knows_settings = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if "tdx_identity.settings" in imports_of(path)
    }
    assert knows_settings <= {"tdx_identity", "tdx_identity.app", "tdx_identity.cli"}
    assert "tdx_identity.platform" in imports_of(PACKAGE / "app.py")
