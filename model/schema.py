"""Pulumi.yaml's `config:` block, generated from the models of model/config.py.

`python -m model.schema` rewrites the block in Pulumi.yaml; tests/unit/test_settings.py fails when
the file and the models differ in either direction (a key, its type, default or description).
Every key has a default: Pulumi refuses to run a stack that lacks a declared key without one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .config import StackConfig
from .settings import DEFAULTS, inner_model, is_a

PROJECT = "hacluster"
PULUMI_YAML = Path(__file__).resolve().parent.parent / "Pulumi.yaml"


def _keys(model: type[BaseModel]) -> str:
    """{key: default, nested: {...}} of a model, for the description."""
    parts = []
    for f in model.model_fields.values():
        sub = inner_model(f.annotation)
        if sub is not None and not is_a(f.annotation, list) and f.default is None and f.default_factory is None:
            parts.append(f"{f.alias}: {_keys(sub)} | null")
        elif sub is not None and not is_a(f.annotation, list):
            parts.append(f"{f.alias}: {_keys(sub)}")
        elif f.is_required():
            parts.append(f"{f.alias}")
        else:
            d = f.get_default(call_default_factory=True)
            parts.append(f"{f.alias}: {json.dumps(d) if not isinstance(d, str) else d}")
    return "{" + ", ".join(parts) + "}"


def pulumi_config() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, f in StackConfig.model_fields.items():
        key = f"{PROJECT}:{f.alias}"
        sub = inner_model(f.annotation)
        desc = f.description or name
        if is_a(f.annotation, list):
            spec: dict[str, Any] = {"type": "array", "items": {"type": "object" if sub else "string"}}
            if sub:
                desc += " Each: " + _keys(sub) + "."
            default: Any = DEFAULTS[f.alias]
        elif sub is not None:
            spec, default = {"type": "object"}, {}
            desc += (" Each NAME: " if is_a(f.annotation, dict) else " Keys (defaults): ") + _keys(sub) + "."
        else:
            spec = {"type": "string"}
            default = DEFAULTS[f.alias] if DEFAULTS[f.alias] is not None else ""
        out[key] = {**spec, "description": desc, "default": default}
    return out


HEADER = """\
# Project-level config schema, generated from model/config.py by `python -m model.schema` (a unit test
# keeps both in step). model/settings.py validates every value; `pulumi config set --secret
# hacluster:vrrpAuthPass X` sets the VRRP password, otherwise one is generated per stack.
"""


def render_pulumi_yaml(text: str) -> str:
    head = text.split("\n# Project-level config schema")[0].split("\nconfig:")[0].rstrip("\n")
    body = yaml.safe_dump({"config": pulumi_config()}, sort_keys=False, width=110, default_flow_style=False)
    return f"{head}\n{HEADER}{body}"


if __name__ == "__main__":
    PULUMI_YAML.write_text(render_pulumi_yaml(PULUMI_YAML.read_text()))
    print(f"wrote {PULUMI_YAML}", file=sys.stderr)
