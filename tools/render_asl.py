"""Render the ASL template (state_machine/pipeline.asl.json) with dummy ARNs, for statelint.

Terraform fills the ``${name}`` placeholders with templatefile(); statelint rejects them as Resource
URIs, so this substitutes well-formed ARNs of the right service. Usage:
    python tools/render_asl.py TEMPLATE OUTPUT
Exit status 1 (and no output file) when a placeholder has no dummy value here.
"""
import json
import sys
from pathlib import Path

from totesys_local import asl
from totesys_local.asl import placeholders  # noqa: F401  (re-exported for the tests)

DUMMY_ACCOUNT = "123456789012"
DUMMY_VALUES = {
    "ingest_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-ingest",
    "transform_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-transform",
    "load_function_arn": f"arn:aws:lambda:eu-west-2:{DUMMY_ACCOUNT}:function:totesys-load",
    "alert_topic_arn": f"arn:aws:sns:eu-west-2:{DUMMY_ACCOUNT}:totesys-pipeline-alerts",
}


def render(text, values=None):
    """Substitute every placeholder (dummy ARNs by default); KeyError names any without a value."""
    return asl.render(text, DUMMY_VALUES if values is None else values)


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
