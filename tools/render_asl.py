"""Render the ASL template (state_machine/pipeline.asl.json) with dummy ARNs, for statelint.

Terraform fills the ``${name}`` placeholders with templatefile(); statelint rejects them as Resource
URIs, so this substitutes well-formed ARNs of the right service. Usage:
    python tools/render_asl.py TEMPLATE OUTPUT
Exit status 1 (and no output file) when a placeholder has no dummy value here.
"""
import json
import re
import sys
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
DUMMY_ACCOUNT = "123456789012"
DUMMY_VALUES = {
    "ingest_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-ingest",
    "transform_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-transform",
    "load_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-load",
    "alert_topic_arn": f"arn:aws:sns:eu-west-2:{DUMMY_ACCOUNT}:totesys-pipeline-alerts",
}


def placeholders(text):
    """Return the set of ``${name}`` placeholder names in a template."""
    return set(PLACEHOLDER.findall(text))


def render(text, values=None):
    """Substitute every placeholder; raise KeyError naming the first one without a value."""
    values = DUMMY_VALUES if values is None else values
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise KeyError(f"no value for placeholder(s): {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    source, target = Path(argv[1]), Path(argv[2])
    try:
        rendered = render(source.read_text())
        json.loads(rendered)
    except (KeyError, ValueError) as err:
        print(f"{source}: {err}", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
