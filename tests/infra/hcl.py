"""Helpers for the infrastructure tests: parse a Terraform stack with python-hcl2 into plain dicts."""
from pathlib import Path

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
IMMUTABLE = ROOT / "immutable-terraform"
MAIN = ROOT / "main-terraform"
SRC = ROOT / "src"
ASL_TEMPLATE = ROOT / "state_machine" / "pipeline.asl.json"

_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


def load_file(path):
    with open(path) as handle:
        return hcl2.load(handle, serialization_options=_OPTIONS)


def load_stack(directory):
    """Return {block_kind: {...}} merged over every .tf file of a stack.

    resource/data: {type: {name: body}}; variable/output: {name: body}; locals: {name: value}.
    """
    stack = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    for path in sorted(Path(directory).glob("*.tf")):
        parsed = load_file(path)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_name, bodies in block.items():
                    stack[kind].setdefault(type_name, {}).update(bodies)
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                stack[kind].update(block)
        for block in parsed.get("locals", []):
            stack["locals"].update({k: v for k, v in block.items() if k != "__comments__"})
    return stack


def default(stack, variable):
    return stack["variable"][variable]["default"]
