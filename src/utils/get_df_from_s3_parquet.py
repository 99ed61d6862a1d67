"""Seed interface: one Parquet object from S3 as a DataFrame, checked against the table's Arrow schema."""
from utils.aws.objects import conform_table, read_parquet_table

__all__ = ["conform_table", "get_df_from_s3_parquet", "read_parquet_table"]


def get_df_from_s3_parquet(s3_client, bucket_name, file_key, table_name, schema):
    """``utils.aws.objects.read_parquet_table`` as a pandas DataFrame (same checks, same errors)."""
    return read_parquet_table(s3_client, bucket_name, file_key, table_name, schema).to_pandas()
