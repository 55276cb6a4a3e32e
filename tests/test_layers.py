"""Imports go down (DESIGN section 4), checked by parsing every module with `ast`.

Rules:
- The sans-IO layers (meshstream/protocol, topology/, simulations/) never import trio,
  socket, threading, asyncio, selectors, subprocess, secrets or meshstream.runtime, and
  never read clocks or entropy: no `time.*`, no global `random.*` functions (a seeded
  `random.Random` is fine), no `uuid.uuid1/uuid4`, no `os.urandom`, no `datetime.now`.
- topology/ never imports meshstream.protocol.
- Under meshstream/, only runtime/, client.py, cli.py and demo.py import trio.
- Every package sits on a layer; a module never imports a higher layer than its own.

The checker is tested on synthetic bad modules, so a silent checker cannot pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meshstream", "topology", "simulations")
SANS_IO = ("meshstream.protocol", "topology", "simulations")
IO_MODULES = ("trio", "socket", "threading", "asyncio", "selectors", "subprocess", "secrets", "meshstream.runtime")
TRIO_ALLOWED = ("meshstream.runtime", "meshstream.client", "meshstream.cli", "meshstream.demo")
FORBIDDEN_CALLS = {  # module -> attributes a sans-IO module may not touch (None: all but allowed)
    "time": None,
    "random": None,
    "uuid": {"uuid1", "uuid4"},
    "os": {"urandom", "getrandom"},
    "datetime": {"now", "utcnow", "today"},
}
ALLOWED_ATTRIBUTES = {"random": {"Random"}}  # a seeded generator passed in is the rule
# Lower number = lower layer. Unlisted meshstream modules are faces (the top).
LAYERS = [
    (0, ("meshstream.errors", "meshstream.ids", "meshstream.config", "meshstream.hashing")),
    (1, ("meshstream.cbor", "meshstream.clocks", "meshstream.envelope", "meshstream.envelope_run", "meshstream.ordering",
         "meshstream.wire")),
    (2, ("topology",)),
    (3, ("meshstream.store",)),
    (4, ("meshstream.protocol",)),
    (5, ("simulations",)),
    (6, ("meshstream.runtime",)),
]
FACE_LAYER = 7


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """The layer of a project module, None for the standard library and third parties."""
    for rank, prefixes in LAYERS:
        if any(_within(module, prefix) for prefix in prefixes):
            return rank
    if module == "meshstream":
        return 0  # the package's __init__ is a docstring and version, nothing else
    return FACE_LAYER if _within(module, "meshstream") else None


def _is_module(dotted: str) -> bool:
    """True when `dotted` names a module or package of this tree (not a name inside one)."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every import in `tree`."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                found.append((node.lineno, base, alias.name))
    return found


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to the watched modules by `import X [as Y]`."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in FORBIDDEN_CALLS:
                    names[alias.asname or alias.name] = alias.name
    return names


def _forbidden_uses(tree: ast.AST) -> list[tuple[int, str]]:
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            watched = aliases[node.value.id]
            banned = FORBIDDEN_CALLS[watched]
            allowed = ALLOWED_ATTRIBUTES.get(watched, set())
            if node.attr not in allowed and (banned is None or node.attr in banned):
                found.append((node.lineno, f"{watched}.{node.attr}"))
    return found


def check_source(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every layering violation in one module's source, as readable strings."""
    tree = ast.parse(source)
    problems = []
    own_layer = layer_of(module)
    sans_io = any(_within(module, prefix) for prefix in SANS_IO)
    for line, target, name in _imports(tree, module, is_package):
        full = f"{target}.{name}" if name else target
        where = f"{module}:{line}"
        if sans_io and any(_within(target, m) or _within(full, m) for m in IO_MODULES):
            problems.append(f"{where} sans-IO module imports {full}")
        if sans_io and name is not None and target in FORBIDDEN_CALLS:
            banned, allowed = FORBIDDEN_CALLS[target], ALLOWED_ATTRIBUTES.get(target, set())
            if name not in allowed and (banned is None or name in banned):
                problems.append(f"{where} sans-IO module imports {full} (clock or entropy)")
        if _within(module, "topology") and (_within(target, "meshstream.protocol") or _within(full, "meshstream.protocol")):
            problems.append(f"{where} topology imports {full}")
        if _within(target, "trio") and _within(module, "meshstream") and not any(_within(module, m) for m in TRIO_ALLOWED):
            problems.append(f"{where} imports trio outside runtime/, client, cli, demo")
        target_layer = layer_of(full if name and _is_module(full) else target)
        if own_layer is not None and target_layer is not None and target_layer > own_layer:
            problems.append(f"{where} imports {full} from a higher layer ({target_layer} > {own_layer})")
    if sans_io:
        problems.extend(f"{module}:{line} sans-IO module uses {what}" for line, what in _forbidden_uses(tree))
    return problems


def project_modules() -> list[tuple[Path, str, bool]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = list(relative.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found.append((path, ".".join(parts), is_package))
    return found


def test_the_tree_respects_the_layers():
    modules = project_modules()
    assert len(modules) >= 10, "the checker found too few modules to be looking at the tree"
    problems = []
    for path, module, is_package in modules:
        problems.extend(check_source(path.read_text(encoding="utf-8"), module, is_package))
    assert not problems, "layering violations:\n" + "\n".join(problems)


BAD_MODULES = [
    ("meshstream.protocol.bad", "import trio", "imports trio"),
    ("meshstream.protocol.bad", "import socket as s", "imports socket"),
    ("meshstream.protocol.bad", "from threading import Lock", "imports threading"),
    ("topology.bad", "import asyncio", "imports asyncio"),
    ("simulations.bad", "import selectors", "imports selectors"),
    ("simulations.bad", "import subprocess", "imports subprocess"),
    ("simulations.bad", "from meshstream.runtime import driver", "meshstream.runtime"),
    ("simulations.bad", "from meshstream import runtime", "meshstream.runtime"),
    ("meshstream.protocol.bad", "import time\ndef f():\n    return time.monotonic()", "time.monotonic"),
    ("meshstream.protocol.bad", "import time as clock\nclock.sleep(1)", "time.sleep"),
    ("meshstream.protocol.bad", "from time import monotonic", "time.monotonic"),
    ("topology.bad", "import random\nrandom.choice([1, 2])", "random.choice"),
    ("topology.bad", "from random import shuffle", "random.shuffle"),
    ("simulations.bad", "import uuid\nuuid.uuid4()", "uuid.uuid4"),
    ("simulations.bad", "import os\nos.urandom(16)", "os.urandom"),
    ("meshstream.protocol.bad", "from os import urandom", "os.urandom"),
    ("topology.bad", "from meshstream.protocol import node", "topology imports meshstream.protocol"),
    ("topology.bad", "import meshstream.protocol.effects", "topology imports meshstream.protocol"),
    ("topology.fold", "from meshstream.protocol.node import Node", "topology imports"),
    ("meshstream.store.segment", "import trio", "imports trio outside runtime"),
    ("meshstream.wire.framing", "from trio import open_tcp_stream", "imports trio outside runtime"),
    ("meshstream.envelope", "from meshstream.store import api", "higher layer"),
    ("meshstream.wire.bad", "from topology.events import MemberJoined", "higher layer"),
    ("meshstream.store.bad", "from ..protocol import node", "higher layer"),
    ("meshstream.protocol.bad", "from simulations import loop", "higher layer"),
]


@pytest.mark.parametrize(("module", "source", "expected"), BAD_MODULES)
def test_the_checker_flags_a_bad_module(module, source, expected):
    problems = check_source(source, module)
    assert any(expected in problem for problem in problems), problems


GOOD_MODULES = [
    ("meshstream.protocol.good", "import random\ndef f(rng: random.Random):\n    return rng.random()"),
    ("meshstream.protocol.good", "from random import Random\nfrom meshstream.envelope import Event"),
    ("topology.good", "from meshstream.clocks import Dot\nimport os.path\nos.path.join('a')"),
    ("meshstream.runtime.transport", "import trio\nimport time\ntime.monotonic()"),
    ("meshstream.cli", "import trio\nfrom meshstream.runtime import peer"),
    ("meshstream.protocol.node", "from . import effects\nfrom .membership import Membership"),
    ("meshstream.protocol.node", "from meshstream import errors, ids\nfrom meshstream import __doc__"),
]


@pytest.mark.parametrize(("module", "source"), GOOD_MODULES)
def test_the_checker_passes_a_good_module(module, source):
    assert check_source(source, module) == []
