"""Seed interface: write one object to S3, never overwriting it (``utils.aws.objects.write_to_s3``)."""
from utils.aws.objects import write_to_s3

__all__ = ["write_to_s3"]
