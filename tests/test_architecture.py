"""The engine's rooms talk through public names (STYLE.md, "Contracts, not reaches").

No module of seqvault/ reads another object's underscore attributes, or imports another
module's underscore names. `self`/`cls` are the object's own; the short list below names the
only exceptions, each with its reason. (Layering and cycles: `lint-imports`, run by make lint.)
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "seqvault"

# (file relative to seqvault/, attribute): why it is allowed.
ALLOWED: dict[tuple[str, str], str] = {}


def _reaches(source: str, rel: str) -> list[str]:
    found = []
    tree = ast.parse(source, filename=rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if (rel, name) in ALLOWED:
                continue
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{rel}:{node.lineno}: imports {node.module}.{alias.name}")
    return found


def test_no_module_reads_another_objects_private_attributes():
    reaches = [r for p in sorted(PKG.rglob("*.py"))
               for r in _reaches(p.read_text(), p.relative_to(PKG).as_posix())]
    assert reaches == [], "reach through a public name instead:\n" + "\n".join(reaches)


def test_the_checker_finds_a_reach():
    # The test above can fail: planted reaches are found, the object's own are not.
    src = ("from .segment import _CRC\n"
           "def f(vault):\n    return vault._lock\n"
           "class A:\n    def g(self):\n        return self._x\n")
    assert _reaches(src, "probe.py") == ["probe.py:1: imports segment._CRC",
                                          "probe.py:3: vault._lock"]
