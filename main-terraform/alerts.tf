# Alerts: ONE e-mail per failed execution, none for a retry that succeeds (README.md "Alerts",
# docs/DESIGN.md "Alerts"). Everything goes to one SNS topic whose e-mail subscription is the address in
# email.txt (stored by immutable-terraform). Who e-mails what:
#   - a stage fails after its retries: the state machine's NotifyFailure (stage, error, cause, execution),
#     then the Fail state PipelineFailed. That message IS the alert; no alarm repeats it.
#   - an execution fails WITHOUT that message (the data-quality publish failed: DataQualityAlertFailed; a
#     runtime error in the definition; NotifyFailure's own publish failed): the unreported-failure alarm.
#   - an execution times out (it never reaches NotifyFailure): the ExecutionsTimedOut alarm.
#   - rows quarantined: the state machine's data-quality message (the execution succeeds).
#   - warehouse more than 30 minutes behind: the freshness alarm (dashboard.tf), on entering and leaving ALARM.
# Without e-mail (console and dashboard only): the CRITICAL log-line alarms, because a stage that logs
# CRITICAL fails its execution and NotifyFailure reports it; and ExecutionsFailed, which would duplicate it.
resource "aws_sns_topic" "alerts" {
  name              = "${var.project}-pipeline-alerts"
  kms_master_key_id = local.kms_key_arn
}

resource "aws_sns_topic_subscription" "alert_email" {
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  # The recipient must confirm the subscription e-mail once after the first apply.
  endpoint = local.alert_email
}

locals {
  # The Fail state NotifyFailure leads to (state_machine/pipeline.asl.json; tests/infra check they agree).
  reported_failure_error = "PipelineFailed"
}

# utils/logger.py writes one JSON object per line with "level"; this counts its CRITICAL lines. The
# contract for the code (docs/DEPLOY.md): retryable errors (RetryableError subclasses) log at ERROR, so a
# retry that then succeeds leaves no CRITICAL line; CRITICAL is for the failure that fails the stage.
resource "aws_cloudwatch_log_metric_filter" "critical" {
  for_each = local.functions

  name           = "${local.function_names[each.key]}-critical"
  log_group_name = aws_cloudwatch_log_group.function[each.key].name
  pattern        = "{ $.level = \"CRITICAL\" }"

  metric_transformation {
    name          = "CriticalLogLines-${each.key}"
    namespace     = "ToteSys"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "critical" {
  for_each = local.functions

  alarm_name          = "${local.function_names[each.key]}-critical-log"
  alarm_description   = "${local.function_names[each.key]} logged a CRITICAL line: the stage failed. No e-mail: the failed execution's NotifyFailure message is the alert."
  namespace           = "ToteSys"
  metric_name         = aws_cloudwatch_log_metric_filter.critical[each.key].metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = []
}

# Step Functions logs (level ERROR, execution data included) one {"type": "ExecutionFailed", "details":
# {"error": ..., "cause": ...}} event per failed execution. Those failing with PipelineFailed were already
# reported by NotifyFailure; any other error means no message went out.
resource "aws_cloudwatch_log_metric_filter" "unreported_failure" {
  name           = "${var.project}-pipeline-unreported-failure"
  log_group_name = aws_cloudwatch_log_group.state_machine.name
  pattern        = "{ $.type = \"ExecutionFailed\" && $.details.error != \"${local.reported_failure_error}\" }"

  metric_transformation {
    name          = "UnreportedExecutionFailures"
    namespace     = "ToteSys"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "unreported_failure" {
  alarm_name          = "${var.project}-pipeline-unreported-failure"
  alarm_description   = "ToteSys: an execution failed without publishing its failure message (e.g. DataQualityAlertFailed): see the state machine's log group."
  namespace           = "ToteSys"
  metric_name         = aws_cloudwatch_log_metric_filter.unreported_failure.metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

resource "aws_cloudwatch_metric_alarm" "executions" {
  for_each = {
    ExecutionsFailed   = { what = "an execution of the pipeline failed (no e-mail: NotifyFailure or the unreported-failure alarm sent it)", email = false }
    ExecutionsTimedOut = { what = "an execution of the pipeline timed out", email = true }
  }

  alarm_name          = "${var.project}-pipeline-${each.key}"
  alarm_description   = "ToteSys: ${each.value.what}."
  namespace           = "AWS/States"
  metric_name         = each.key
  dimensions          = { StateMachineArn = aws_sfn_state_machine.pipeline.arn }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = each.value.email ? [aws_sns_topic.alerts.arn] : []
}
