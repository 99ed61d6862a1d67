"""The state machine template (state_machine/pipeline.asl.json) and its ``${name}`` placeholders,
filled exactly as Terraform's templatefile() fills them."""
from typing import Mapping, Set
import re
from pathlib import Path

ASL_TEMPLATE = Path(__file__).resolve().parents[2] / "state_machine" / "pipeline.asl.json"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def placeholders(text: str) -> Set[str]:
    """Return the set of ``${name}`` placeholder names in a template."""
    return set(PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute every placeholder; raise KeyError naming the ones without a value."""
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise KeyError(f"no value for placeholder(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
