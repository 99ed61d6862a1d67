"""A rebuild's processed objects live under their own generation prefix, never over earlier ones.

``GenerationS3`` wraps an S3 client: every object of the processed bucket is read and written at
``_generations/<generation>/<key>`` instead of ``<key>`` (manifests keep the plain keys, so a generation
is laid out exactly as the bucket's top level is); the ingest bucket is untouched. The transform and
the load run unchanged on it: they only get, put and head objects (the pipeline never lists a bucket).
A generation whose transform state already exists is refused: a rebuild writes into a new one.
"""
from datetime import datetime, timezone
from typing import Any, Optional

from utils.aws.layout import GENERATIONS_PREFIX
from utils.aws.state import read_transform_state
from utils.errors import ObjectExistsError

PREFIXED_CALLS = ("get_object", "put_object", "head_object")


def new_generation(now: Optional[datetime] = None) -> str:
    """A generation name from the time (UTC, microseconds): unique and increasing."""
    return f"{(now or datetime.now(timezone.utc)):%Y%m%dT%H%M%S%f}"


class GenerationS3:
    """``s3_client`` with the processed bucket's keys moved under ``_generations/<generation>/``."""

    def __init__(self, s3_client: Any, processed_bucket: str, generation: str) -> None:
        if not generation or "/" in generation:
            raise ValueError(f"a generation is a name without '/', got {generation!r}")
        self.client, self.bucket = s3_client, processed_bucket
        self.prefix = f"{GENERATIONS_PREFIX}/{generation}/"

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name not in PREFIXED_CALLS:
            return call

        def prefixed(**kwargs: Any) -> Any:
            if kwargs.get("Bucket") == self.bucket:
                kwargs["Key"] = self.prefix + kwargs["Key"]
            return call(**kwargs)
        return prefixed


def check_new(s3_client: Any, processed_bucket: str, generation: str) -> None:
    """Raise ObjectExistsError when ``generation`` already holds a transform state."""
    proxied = GenerationS3(s3_client, processed_bucket, generation)
    if read_transform_state(proxied, processed_bucket)[0]:
        key = f"{proxied.prefix}_state/transform.json"
        raise ObjectExistsError(f"generation {generation} already exists (s3://{processed_bucket}/{key}): "
                                "a rebuild writes a new one", key=key)
