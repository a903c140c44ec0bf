"""What the PyPI SDK pulumi_libvirt (0.5.4) declares, and what the hacluster program uses of it.

Run by schema_test.go: `python sdk_schema.py PROJECT_ROOT` prints JSON
  {"version": "0.5.4",
   "resources": {token: {"inputs": {name: type}, "outputs": {name: type}}},
   "types": {token: {name: type}},
   "used": {token: [name, ...]}}
with types as "string", "integer", "number", "boolean", "array<T>", "map<T>" or "ref:TOKEN", read
from the SDK's own type annotations; "used" are the keyword arguments of every `libvirt.X(...)`
call in components/*.py (and the keys of a dict literal passed as `**name`).
"""

from __future__ import annotations

import ast
import collections.abc
import importlib.metadata
import json
import re
import sys
import typing
from pathlib import Path

import pulumi
import pulumi_libvirt as lv
from pulumi._types import _PULUMI_NAME

# pulumi.Input and pulumi.Output annotations refer to these by bare name (e.g. "Output[T]")
PULUMI_NAMES = {**vars(pulumi.output), **vars(pulumi)}


def kind(t) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Union:  # Optional[...] and pulumi.Input[T] = Union[T, Awaitable[T], Output[T]]
        plain = [a for a in args if a is not type(None)
                 and typing.get_origin(a) not in (collections.abc.Awaitable, pulumi.Output)]
        return kind(plain[0])
    if origin is pulumi.Output:
        return kind(args[0])
    if origin in (collections.abc.Sequence, list):
        return f"array<{kind(args[0])}>"
    if origin in (collections.abc.Mapping, dict):
        return f"map<{kind(args[1])}>"
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if t in simple:
        return simple[t]
    name = t.__name__.removesuffix("Args")
    return f"ref:libvirt:index/{name}:{name}"


def props(cls) -> dict[str, str]:
    out = {}
    for attr in vars(cls).values():
        fget = getattr(attr, "fget", None)
        if fget is not None and hasattr(fget, _PULUMI_NAME):
            out[getattr(fget, _PULUMI_NAME)] = kind(typing.get_type_hints(fget, localns=PULUMI_NAMES)["return"])
    return out


def token(cls) -> str:
    if cls is lv.Provider:
        return "provider"
    module = cls.__module__.rsplit(".", 1)[1]
    return f"libvirt:index/{re.sub(r'_([a-z])', lambda m: m[1].upper(), module)}:{cls.__name__}"


def used(root: Path) -> dict[str, set[str]]:
    """SDK class name -> the snake_case keyword arguments the program passes to it."""
    found: dict[str, set[str]] = {}
    for f in sorted((root / "components").glob("*.py")):
        tree = ast.parse(f.read_text())
        dicts = {n.targets[0].id: {k.value for k in n.value.keys if isinstance(k, ast.Constant)}
                 for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
                 and isinstance(n.targets[0], ast.Name)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and \
                    isinstance(n.func.value, ast.Name) and n.func.value.id == "libvirt":
                names = found.setdefault(n.func.attr, set())
                for k in n.keywords:
                    if k.arg is None and isinstance(k.value, ast.Name):
                        names |= dicts.get(k.value.id, set())
                    elif k.arg != "opts":
                        names.add(k.arg)
    return found


def main() -> None:
    resources, types = {}, {}
    for obj in vars(lv).values():
        if isinstance(obj, type) and issubclass(obj, pulumi.CustomResource):
            args = getattr(lv, obj.__name__ + "Args")
            resources[token(obj)] = {"inputs": props(args), "outputs": props(obj)}
        elif isinstance(obj, type) and obj.__name__.endswith("Args") and not hasattr(lv, obj.__name__[:-4]):
            types[kind(obj).removeprefix("ref:")] = props(obj)
    use = {}
    for name, snake in used(Path(sys.argv[1])).items():
        cls = getattr(lv, name)
        tok = token(cls) if issubclass(cls, pulumi.CustomResource) else kind(cls).removeprefix("ref:")
        use[tok] = sorted(re.sub(r"_([a-z])", lambda m: m[1].upper(), s) for s in snake)
    print(json.dumps({"version": importlib.metadata.version("pulumi_libvirt"), "resources": resources,
                      "types": types, "used": use}, indent=1, sort_keys=True))


main()
