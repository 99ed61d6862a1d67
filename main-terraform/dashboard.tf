# Pipeline metrics (src/utils/metrics.py): EMF log lines in the functions' log groups, which CloudWatch
# turns into metrics in the ToteSys namespace; no IAM permission is involved. The dashboard shows them;
# the freshness alarm watches WarehouseLag (SPEC: the warehouse is at most 30 minutes behind totesys).
locals {
  metrics_namespace = "ToteSys"
  # Must equal utils.metrics.SERVICE (tests/infra/test_dashboard_terraform.py checks it).
  metrics_service      = "totesys"
  freshness_limit_secs = 1800 # 30 minutes
  stages               = ["ingest", "transform", "load"]

  per_stage_metrics = ["StageDuration", "BatchLag", "Failures"]

  # One line per stage for each per-stage metric: {metric name: [[namespace, name, dimensions...], ...]}.
  per_stage = { for name in local.per_stage_metrics : name => [
    for stage in local.stages : [local.metrics_namespace, name, "service", local.metrics_service, "stage", stage]
  ] }

  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Warehouse lag (s): now minus the newest loaded batch"
        region = var.region
        stat   = "Maximum"
        period = 300
        view   = "timeSeries"
        metrics = [
          [local.metrics_namespace, "WarehouseLag", "service", local.metrics_service],
        ]
        annotations = {
          horizontal = [{ label = "30 minutes behind: alarm", value = local.freshness_limit_secs }]
        }
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Batch lag per stage (s)"
        region  = var.region
        stat    = "Maximum"
        period  = 300
        view    = "timeSeries"
        metrics = local.per_stage["BatchLag"]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title   = "Stage duration (ms)"
        region  = var.region
        stat    = "Maximum"
        period  = 300
        view    = "timeSeries"
        metrics = local.per_stage["StageDuration"]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title   = "Failures per stage"
        region  = var.region
        stat    = "Sum"
        period  = 300
        view    = "timeSeries"
        metrics = local.per_stage["Failures"]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "Rows per stage (all tables; per table with per_table_row_metrics)"
        region = var.region
        stat   = "Sum"
        period = 900
        view   = "timeSeries"
        metrics = [
          [{ id = "rows", expression = "SEARCH('{${local.metrics_namespace},service,stage} MetricName=\"Rows\"', 'Sum', 900)" }],
          [{ id = "rows_per_table", expression = "SEARCH('{${local.metrics_namespace},service,stage,table} MetricName=\"Rows\"', 'Sum', 900)" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title  = "Rejected and deleted rows (load)"
        region = var.region
        stat   = "Sum"
        period = 900
        view   = "timeSeries"
        metrics = [
          for name in ["RejectedRows", "DeletedRows"] :
          [local.metrics_namespace, name, "service", local.metrics_service, "stage", "load"]
        ]
      }
    },
    {
      # The verify function (verify.tf): 0 when totesys and the warehouse matched at its last run.
      type = "metric", x = 0, y = 18, width = 12, height = 6
      properties = {
        title   = "verify: rows that differ between totesys and the warehouse (0 = all matched)"
        region  = var.region
        stat    = "Maximum"
        period  = 86400
        view    = "timeSeries"
        metrics = [[local.metrics_namespace, "VerifyMismatches", "service", local.metrics_service]]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  dashboard_name = "${var.project}-pipeline"
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}

# A missing datapoint is breaching: a pipeline that stops running, or whose load keeps failing, emits no
# WarehouseLag, and that is exactly when the warehouse falls behind. Two 15-minute periods (the schedule's
# rate) cover the 30 minutes; one late run leaves one empty period and does not alarm by itself.
resource "aws_cloudwatch_metric_alarm" "warehouse_freshness" {
  alarm_name          = "${var.project}-warehouse-behind"
  alarm_description   = "ToteSys: warehouse more than 30 minutes behind totesys (or no fresh load for 30 minutes)."
  namespace           = local.metrics_namespace
  metric_name         = "WarehouseLag"
  dimensions          = { service = local.metrics_service }
  statistic           = "Maximum"
  unit                = "Seconds"
  period              = 900
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  threshold           = local.freshness_limit_secs
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
}

# The WAL the CDC slot keeps on totesys (utils/ingest/cdc/metric.py): a pipeline that stops reading its slot
# makes the source keep WAL until max_slot_wal_keep_size invalidates the slot. Only with ingest_mode = cdc.
resource "aws_cloudwatch_metric_alarm" "cdc_retained_wal" {
  count               = var.ingest_mode == "cdc" ? 1 : 0
  alarm_name          = "${var.project}-cdc-retained-wal"
  alarm_description   = "ToteSys: the CDC replication slot keeps more WAL on totesys than cdc_retained_wal_alarm_bytes (ingest stopped reading it?). totesys cdc status; README, Change data capture."
  namespace           = local.metrics_namespace
  metric_name         = "CdcRetainedWalBytes"
  dimensions          = { service = local.metrics_service }
  statistic           = "Maximum"
  unit                = "Bytes"
  period              = 900
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  threshold           = var.cdc_retained_wal_alarm_bytes
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
}
