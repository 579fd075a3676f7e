"""The layering rules of the design (§2), checked on the source text with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def sources(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return files


def test_only_hsm_imports_pkcs11() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("kms", "gateway")
        for p in sources(pkg)
        if "pkcs11" in {top(m) for m in imported_modules(p)}
    ]
    assert offenders == []


def test_hsm_imports_nothing_from_the_layers_above() -> None:
    forbidden = {"kms", "gateway", "fastapi", "sqlalchemy", "starlette", "uvicorn"}
    offenders = {
        str(p.relative_to(ROOT)): sorted({top(m) for m in imported_modules(p)} & forbidden)
        for p in sources("hsm")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_gateway_reaches_the_kms_only_through_its_client_libraries() -> None:
    allowed = ("kms.client", "kms.envelope", "kms.audit", "kms.errors", "kms.migrate")
    offenders = []
    for p in sources("gateway"):
        for m in imported_modules(p):
            if top(m) == "hsm" or (top(m) == "kms" and not m.startswith(allowed)):
                offenders.append(f"{p.relative_to(ROOT)}: {m}")
    assert offenders == []


def test_the_rule_checker_sees_imports() -> None:
    """Guard against a checker that silently finds nothing."""
    assert "pkcs11" in imported_modules(ROOT / "hsm" / "pkcs11_hsm.py")
