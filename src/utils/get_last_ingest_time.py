"""When did a table last land in the ingest bucket? (seed interface)"""
from utils.config import load_settings
from utils.format_time import parse_time
from utils.aws.objects import list_keys
from utils.aws.state import read_ingest_state


def get_latest_filename(s3_client, bucket_name, table_name):
    """Return the key under ``table_name/`` with the greatest name (the latest batch), or None.

    Keys are ``table_name/yyyy/mm/dd/hhmmssffffff.ext`` (fixed width), so the greatest name is the
    latest time. The listing is paginated: any number of objects (S3 returns 1,000 per page).
    """
    if not isinstance(table_name, str) or not table_name:
        raise ValueError(f"bad table name: {table_name!r}")
    keys = list_keys(s3_client, bucket_name, f"{table_name}/")
    return keys[-1] if keys else None


def get_last_ingest_time(bucket_name=None, table_name=None, s3_client=None):
    """Return the upper bound (datetime, database clock) of the last successful ingest of
    ``table_name``, or None if it was never ingested.

    "Successful" means recorded in the ingest state pointer: files of a run that failed before
    advancing it do not count, so this is the state's ``tables[table_name].high``, not the newest
    key. ``bucket_name`` defaults to INGEST_BUCKET; ``s3_client`` to a new boto3 client.
    """
    if bucket_name is None:
        bucket_name = load_settings().ingest_bucket
    if s3_client is None:
        import boto3
        s3_client = boto3.client("s3")
    state, _ = read_ingest_state(s3_client, bucket_name)
    entry = state.get("tables", {}).get(table_name)
    if not entry:
        return None
    return parse_time(entry["high"])
