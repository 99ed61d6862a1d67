"""Holding a JSON object the pipeline wrote against its TypedDict in utils.contracts: every required key
present, no key the type does not declare, nested TypedDicts (also as the values of a dict) checked too."""
import typing
from typing import Any, Dict, get_args, get_origin, get_type_hints, is_typeddict


def _nested(hint: Any) -> Any:
    """The TypedDict a value of ``hint`` is, or holds as the values of a dict (else None)."""
    while get_origin(hint) in (typing.Union, typing.Required, typing.NotRequired):
        hint = next((arg for arg in get_args(hint) if arg is not type(None)), None)
    if is_typeddict(hint):
        return hint
    if get_origin(hint) in (dict, Dict) and is_typeddict(get_args(hint)[1]):
        return {"values": get_args(hint)[1]}
    return None


def contract_problems(contract: Any, value: Any, where: str = "") -> list:
    """What in ``value`` differs from the TypedDict ``contract`` (empty: it conforms)."""
    if not isinstance(value, dict):
        return [f"{where or contract.__name__}: not an object"]
    hints = get_type_hints(contract)
    problems = [f"{where}{key}: missing" for key in contract.__required_keys__ if key not in value]
    problems += [f"{where}{key}: not declared in {contract.__name__}" for key in value if key not in hints]
    for key, item in value.items():
        nested = _nested(hints.get(key))
        if nested is None or item is None:
            continue
        if isinstance(nested, dict):
            for name, entry in item.items():
                problems += contract_problems(nested["values"], entry, f"{where}{key}.{name}.")
        else:
            problems += contract_problems(nested, item, f"{where}{key}.")
    return problems
