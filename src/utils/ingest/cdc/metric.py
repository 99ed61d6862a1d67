"""``CdcRetainedWalBytes``: the WAL the source keeps for the CDC slot (current LSN minus its restart_lsn),
one EMF line per CDC run with the dimension ``service``. The alarm in main-terraform watches it
(``cdc_retained_wal_alarm_bytes``); ``max_slot_wal_keep_size`` on the source caps it."""
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from utils.metrics import NAMESPACE, SERVICE, emit

METRIC = "CdcRetainedWalBytes"


def emit_retained_wal(retained_bytes: int) -> None:
    """Emit the metric (its own EMF line, so it never mixes with the stage's metric set)."""
    provider = AmazonCloudWatchEMFProvider(metric_set={}, dimension_set={}, metadata_set={},
                                           namespace=NAMESPACE)
    provider.add_dimension(name="service", value=SERVICE)
    provider.add_metric(name=METRIC, unit=MetricUnit.Bytes, value=int(retained_bytes))
    emit(provider.serialize_metric_set())
