"""The S3 prefixes the stages write, besides their data tables and ``_state`` pointers.

One source for the code and for Terraform: ``write_prefixes.json`` beside this module, which
main-terraform/iam.tf reads with ``jsondecode(file(...))`` to grant ``s3:PutObject`` on exactly these
prefixes. Keys are ``<prefix>/...`` (utils.generate_file_key).
"""
import json
from pathlib import Path

_PREFIXES = json.loads((Path(__file__).with_name("write_prefixes.json")).read_text())

# The ingest bucket.
INGEST_MANIFESTS = _PREFIXES["ingest"]["manifests"]
KEYS_PREFIX = _PREFIXES["ingest"]["key_sets"]
DELETED_PREFIX = _PREFIXES["ingest"]["deleted"]
# The processed bucket.
PROCESSED_MANIFESTS = _PREFIXES["processed"]["manifests"]
SNAPSHOTS_PREFIX = _PREFIXES["processed"]["snapshots"]
REJECTED_PREFIX = _PREFIXES["processed"]["rejected"]
PROCESSED_DELETED_PREFIX = _PREFIXES["processed"]["deleted"]
# A rebuild's processed objects (utils.rebuild.generation): _generations/<generation>/<key>.
GENERATIONS_PREFIX = _PREFIXES["processed"]["generations"]
