# Loud failures: a CRITICAL log line from any function, or a failed/timed-out execution, e-mails the
# address in email.txt (stored by immutable-terraform). The state machine also publishes a message with
# the failing stage and cause itself (NotifyFailure in the ASL template).
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

# utils/logger.py writes one JSON object per line with "level"; this matches its CRITICAL lines.
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
  alarm_description   = "${local.function_names[each.key]} logged a CRITICAL line: the stage failed."
  namespace           = "ToteSys"
  metric_name         = aws_cloudwatch_log_metric_filter.critical[each.key].metric_transformation[0].name
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
    ExecutionsFailed   = "an execution of the pipeline failed"
    ExecutionsTimedOut = "an execution of the pipeline timed out"
  }

  alarm_name          = "${var.project}-pipeline-${each.key}"
  alarm_description   = "ToteSys: ${each.value}."
  namespace           = "AWS/States"
  metric_name         = each.key
  dimensions          = { StateMachineArn = aws_sfn_state_machine.pipeline.arn }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}
