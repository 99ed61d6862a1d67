"""The CloudWatch EMF lines a stage prints, read back (utils.metrics)."""
import json


def emf_lines(text):
    """The EMF objects among the printed lines, as (metric values, dimensions, namespace)."""
    found = []
    for line in text.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        names = [m["Name"] for m in directive["Metrics"]]
        dims = {key: blob[key] for key in directive["Dimensions"][0]}
        found.append(({name: blob[name] for name in names}, dims, directive["Namespace"]))
    return found


def metric(lines, name, **dims):
    """Values of ``name`` on lines whose dimensions are exactly ``dims`` (EMF may hold one or a list)."""
    out = []
    for values, found, _ in lines:
        if name in values and found == dims:
            value = values[name]
            out.extend(value if isinstance(value, list) else [value])
    return out
