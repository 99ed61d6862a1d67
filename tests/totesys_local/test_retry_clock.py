"""The local compression of the state machine's Retry waits (totesys_local.retry_clock)."""
import pytest

from totesys_local.retry_clock import (DEFAULT_SCALE, SCALE_VARIABLE, RetryClock, compressed_retry_waits,
                                       scale_from_environment)


@pytest.mark.parametrize("text, scale", [("", DEFAULT_SCALE), ("0", 0.0), ("0.5", 0.5), (" 1 ", 1.0)])
def test_the_scale_comes_from_the_environment(text, scale):
    assert scale_from_environment({SCALE_VARIABLE: text}) == scale
    assert scale_from_environment({}) == DEFAULT_SCALE


@pytest.mark.parametrize("text", ["-1", "fast", "inf", "nan"])
def test_a_bad_scale_is_refused_naming_the_variable(text):
    with pytest.raises(ValueError, match=SCALE_VARIABLE):
        scale_from_environment({SCALE_VARIABLE: text})


def test_the_clock_records_nominal_waits_and_sleeps_scaled(monkeypatch):
    slept = []
    monkeypatch.setattr("totesys_local.retry_clock.time.sleep", slept.append)
    clock = RetryClock(scale=0.01)
    clock.sleep(15)
    clock.sleep(30.0)
    assert clock.waits == [15.0, 30.0] and clock.elapsed == 45.0
    assert slept == [pytest.approx(0.15), pytest.approx(0.3)]
    RetryClock(scale=0).sleep(120)
    assert len(slept) == 2, "scale 0 never sleeps"


def test_moto_retrier_waits_go_through_the_innermost_clock():
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    with compressed_retry_waits(scale=0) as outer:
        with compressed_retry_waits(scale=0) as inner:
            retrier_decl.time.sleep(60)
        retrier_decl.time.sleep(15)
    assert inner.waits == [60.0] and outer.waits == [15.0]
    assert retrier_decl.time.sleep is not outer.sleep
