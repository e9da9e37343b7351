"""Schedule parsing, normalization to Graph's scheduleInfo and comparison by meaning."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _schedule as s
from ansible_collections.entra.pim.plugins.module_utils._errors import InputError
from hypothesis import given, settings
from hypothesis import strategies as st

UTC = timezone.utc
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def dt(text):
    return s.parse_datetime(text)


# ------------------------------------------------------------------ datetimes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-29T10:00:00Z", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T10:00:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),  # no zone = UTC
        ("2026-11-29 10:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-29T12:00:00+02:00", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        ("2026-11-29T05:30:00-0430", datetime(2026, 11, 29, 10, tzinfo=UTC)),
        # Graph's own form: 7 fractional digits (notes §0)
        ("2022-04-11T11:50:05.9999343Z", datetime(2022, 4, 11, 11, 50, 5, 999934, tzinfo=UTC)),
        ("2022-04-11T11:50:05.5z", datetime(2022, 4, 11, 11, 50, 5, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime_forms(text, expected):
    assert s.parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z", "29/11/2026", ""])
def test_parse_datetime_rejects_with_option_and_value(text):
    with pytest.raises(InputError) as err:
        s.parse_datetime(text, "end")
    assert err.value.msg.startswith("end '%s'" % text)


def test_parse_graph_datetime_null():
    assert s.parse_graph_datetime(None) is None
    assert s.parse_graph_datetime("") is None


def test_format_datetime_is_utc_whole_seconds():
    value = datetime(2026, 11, 29, 12, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert s.format_datetime(value) == "2026-11-29T10:00:00Z"
    assert s.format_datetime(None) is None


aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@given(aware_datetimes, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_datetime_round_trip_any_offset(value, offset_minutes):
    zone = timezone(timedelta(minutes=offset_minutes))
    text = value.astimezone(zone).isoformat()
    assert s.parse_datetime(text) == value
    assert s.parse_datetime(s.format_datetime(value)) == value


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    "text, expected",
    [
        ("PT8H", timedelta(hours=8)),
        ("P30D", timedelta(days=30)),
        ("P2W", timedelta(days=14)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT1H45M", timedelta(hours=1, minutes=45)),
        ("PT90S", timedelta(seconds=90)),
        ("PT0.5H", timedelta(minutes=30)),
        ("pt8h", timedelta(hours=8)),
    ],
)
def test_parse_duration(text, expected):
    assert s.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["8h", "P", "PT", "P1H", "30 days", "P1DT", "", "PXD"])
def test_parse_duration_rejects_non_iso(text):
    with pytest.raises(InputError) as err:
        s.parse_duration(text)
    assert "duration '%s' is not an ISO 8601 duration" % text in err.value.msg


@pytest.mark.parametrize("text", ["P6M", "P1Y", "P1Y2M3D"])
def test_parse_duration_refuses_months_and_years(text):
    with pytest.raises(InputError) as err:
        s.parse_duration(text)
    assert "years or months" in err.value.msg and "P365D" in err.value.msg


@pytest.mark.parametrize("text", ["PT0S", "P0D", "-P1D"])
def test_parse_duration_refuses_zero_and_negative(text):
    with pytest.raises(InputError) as err:
        s.parse_duration(text)
    assert "longer than zero" in err.value.msg


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(days=365), "P365D"),
        (timedelta(hours=8), "PT8H"),
        (timedelta(days=1, hours=2, minutes=30), "P1DT2H30M"),
        (timedelta(seconds=5), "PT5S"),
        (timedelta(0), "PT0S"),
    ],
)
def test_format_duration(delta, text):
    assert s.format_duration(delta) == text


@given(st.integers(min_value=1, max_value=10 * 365 * 86400))
def test_duration_round_trip(seconds):
    delta = timedelta(seconds=seconds)
    assert s.parse_duration(s.format_duration(delta)) == delta


# ------------------------------------------------------------------ desired schedule


def test_desired_defaults_leave_the_end_unmanaged():
    assert s.desired_schedule(now=NOW) == s.Desired(None, None, None, None)
    assert s.desired_schedule(start="now", now=NOW).start is None


def test_desired_permanent_end_duration():
    assert s.desired_schedule(permanent=True, now=NOW).expiration == s.NO_EXPIRATION
    d = s.desired_schedule(end="2027-01-01T00:00:00Z", now=NOW)
    assert (d.expiration, d.end) == (s.AFTER_DATETIME, dt("2027-01-01T00:00:00Z"))
    d = s.desired_schedule(duration="P30D", start="2026-12-01T00:00:00", now=NOW)
    assert (d.expiration, d.duration, d.start) == (s.AFTER_DURATION, timedelta(days=30), dt("2026-12-01T00:00:00Z"))
    # permanent=false is allowed next to an end: it says the same thing
    assert s.desired_schedule(end="2027-01-01", permanent=False, now=NOW).expiration == s.AFTER_DATETIME


def test_desired_end_before_start_names_both():
    with pytest.raises(InputError) as err:
        s.desired_schedule(start="2027-02-01T00:00:00Z", end="2027-01-01T00:00:00Z", now=NOW)
    assert err.value.msg == (
        "end '2027-01-01T00:00:00Z' is not after start '2027-02-01T00:00:00Z'; end must be later than start"
    )


def test_desired_end_in_the_past_without_start():
    with pytest.raises(InputError) as err:
        s.desired_schedule(end="2020-01-01T00:00:00Z", now=NOW)
    assert "end '2020-01-01T00:00:00Z' is in the past" in err.value.msg


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(permanent=True, end="2027-01-01"), "permanent and end"),
        (dict(permanent=True, duration="P1D"), "permanent and duration"),
        (dict(end="2027-01-01", duration="P1D"), "end and duration"),
    ],
)
def test_desired_mutually_exclusive(kwargs, names):
    with pytest.raises(InputError) as err:
        s.desired_schedule(now=NOW, **kwargs)
    assert err.value.msg.startswith(names + " cannot be combined")


def test_desired_permanent_false_alone_is_refused():
    with pytest.raises(InputError) as err:
        s.desired_schedule(permanent=False, now=NOW)
    assert "permanent=false needs end or duration" in err.value.msg


# ------------------------------------------------------------------ scheduleInfo


def test_schedule_info_shapes():
    assert s.schedule_info(s.Desired(None, s.NO_EXPIRATION, None, None), NOW) == {
        "startDateTime": "2026-11-29T10:00:00Z",
        "expiration": {"type": "noExpiration"},
    }
    end = dt("2027-01-01T00:00:00Z")
    assert s.schedule_info(s.Desired(None, s.AFTER_DATETIME, end, None), NOW)["expiration"] == {
        "type": "afterDateTime",
        "endDateTime": "2027-01-01T00:00:00Z",
    }
    info = s.schedule_info(s.Desired(dt("2026-12-01"), s.AFTER_DURATION, None, timedelta(days=30)), NOW)
    assert info == {
        "startDateTime": "2026-12-01T00:00:00Z",
        "expiration": {"type": "afterDuration", "duration": "P30D"},
    }


def test_schedule_info_update_keeps_current_start_and_unmanaged_end():
    current = s.Window(dt("2026-11-01T08:00:00Z"), dt("2027-11-01T08:00:00Z"))
    info = s.schedule_info(s.Desired(dt("2026-12-24T00:00:00Z"), None, None, None), NOW, current)
    assert info == {
        "startDateTime": "2026-12-24T00:00:00Z",
        "expiration": {"type": "afterDateTime", "endDateTime": "2027-11-01T08:00:00Z"},
    }
    # a start in the past is sent as now: Graph counts it from when it processes the request
    info = s.schedule_info(s.Desired(None, s.AFTER_DURATION, None, timedelta(days=60)), NOW, current)
    assert info["startDateTime"] == "2026-11-29T10:00:00Z"
    future = s.Window(dt("2026-12-24T00:00:00Z"), None)
    info = s.schedule_info(s.Desired(None, s.AFTER_DURATION, None, timedelta(days=60)), NOW, future)
    assert info["startDateTime"] == "2026-12-24T00:00:00Z"
    # a new one with nothing said about the end: no expiration, Graph's own default
    assert s.schedule_info(s.Desired(None, None, None, None), NOW)["expiration"] == {"type": "noExpiration"}


# ------------------------------------------------------------------ Graph's shapes


def test_window_from_graph_schedule_info():
    # adminAssign response shape (notes §3.1): all three expiration keys, 7 fractional digits
    info = {
        "startDateTime": "2026-11-29T10:00:05.1234567Z",
        "expiration": {"type": "afterDateTime", "endDateTime": "2027-11-29T10:00:00Z", "duration": None},
        "recurrence": None,
    }
    assert s.window_from_schedule_info(info) == s.Window(
        datetime(2026, 11, 29, 10, 0, 5, 123456, tzinfo=UTC), dt("2027-11-29T10:00:00Z")
    )
    info = {"startDateTime": "2026-11-29T10:00:00Z", "expiration": {"type": "afterDuration", "duration": "P30D"}}
    assert s.window_from_schedule_info(info).end == dt("2026-12-29T10:00:00Z")
    info = {
        "startDateTime": "2026-11-29T10:00:00+01:00",
        "expiration": {"type": "noExpiration", "endDateTime": None, "duration": None},
    }
    assert s.window_from_schedule_info(info) == s.Window(dt("2026-11-29T09:00:00Z"), None)
    assert s.window_from_schedule_info(None) == s.Window(None, None)
    # Graph answered afterDuration with the end it computed: that end wins
    info = {
        "startDateTime": "2026-11-29T10:00:00Z",
        "expiration": {"type": "AfterDuration", "duration": "P30D", "endDateTime": "2026-12-29T10:00:30Z"},
    }
    assert s.window_from_schedule_info(info).end == dt("2026-12-29T10:00:30Z")


def test_window_from_instance():
    assert s.window_from_instance({"startDateTime": None, "endDateTime": None}) == s.Window(None, None)
    inst = {"startDateTime": "2026-11-29T10:00:00Z", "endDateTime": "2026-12-29T10:00:00.0000000Z"}
    assert s.window_from_instance(inst) == s.Window(dt("2026-11-29T10:00:00Z"), dt("2026-12-29T10:00:00Z"))


# ------------------------------------------------------------------ comparison by meaning

PAST = dt("2026-11-01T08:00:00Z")


def desired(**kwargs):
    return s.desired_schedule(now=NOW, **kwargs)


@pytest.mark.parametrize(
    "want, current",
    [
        # nothing managed
        (desired(), s.Window(PAST, None)),
        (desired(), s.Window(PAST, dt("2027-01-01T00:00:00Z"))),
        # permanent
        (desired(permanent=True), s.Window(PAST, None)),
        # an end within the tolerance, either side
        (desired(end="2027-01-01T00:00:00Z"), s.Window(PAST, dt("2027-01-01T00:00:59Z"))),
        (desired(end="2027-01-01T00:00:00Z"), s.Window(PAST, dt("2026-12-31T23:59:01Z"))),
        (desired(end="2027-01-01T01:00:00+01:00"), s.Window(PAST, dt("2027-01-01T00:00:00Z"))),
        # a duration resolved against the schedule's own start
        (desired(duration="P30D"), s.Window(PAST, PAST + timedelta(days=30))),
        (desired(duration="P30D"), s.Window(PAST, PAST + timedelta(days=30, seconds=30))),
        # a start in the past is not drift (Graph rewrote it to its processing time)
        (desired(start="2020-01-01T00:00:00Z", permanent=True), s.Window(PAST, None)),
        (desired(start="2026-11-29T09:00:00Z", duration="P1D"), s.Window(PAST, PAST + timedelta(days=1))),
        # a future start matching within the tolerance
        (desired(start="2026-12-24T00:00:00Z", duration="P7D"), s.Window(dt("2026-12-24T00:00:20Z"), dt("2026-12-31"))),
    ],
)
def test_equal_by_meaning(want, current):
    assert s.differences(want, current, NOW) == []


@pytest.mark.parametrize(
    "want, current, expected",
    [
        (desired(permanent=True), s.Window(PAST, dt("2027-01-01")), ["end: 2027-01-01T00:00:00Z -> permanent"]),
        (desired(end="2027-01-01"), s.Window(PAST, None), ["end: permanent -> 2027-01-01T00:00:00Z"]),
        (desired(end="2027-01-01"), s.Window(PAST, dt("2027-01-01T00:01:01Z")), None),
        (desired(duration="P30D"), s.Window(PAST, PAST + timedelta(days=10)), None),
        (desired(duration="P30D"), s.Window(PAST, None), ["end: permanent -> 2026-12-01T08:00:00Z"]),
        (
            desired(start="2026-12-24T00:00:00Z"),
            s.Window(PAST, None),
            ["start: 2026-11-01T08:00:00Z -> 2026-12-24T00:00:00Z"],
        ),
        (
            desired(start="2026-12-24T00:00:00Z"),
            s.Window(None, None),
            ["start: already started -> 2026-12-24T00:00:00Z"],
        ),
        # asked for "from the past" but the schedule only begins next month
        (desired(start="2026-01-01T00:00:00Z"), s.Window(dt("2026-12-24T00:00:00Z"), None), None),
    ],
)
def test_drift_by_meaning(want, current, expected):
    diff = s.differences(want, current, NOW)
    assert diff
    if expected is not None:
        assert diff == expected


def test_duration_counts_from_a_future_start():
    want = desired(start="2026-12-24T00:00:00Z", duration="P7D")
    assert s.desired_end(want, PAST, NOW) == (True, dt("2026-12-31T00:00:00Z"))
    assert s.desired_end(desired(duration="PT8H"), None, NOW) == (True, NOW + timedelta(hours=8))
    assert s.desired_end(desired(), PAST, NOW) == (False, None)


def test_window_after_predicts_the_new_schedule():
    """What Graph applies (issue 14 point 16): a past start counts from now, and a duration from there."""
    current = s.Window(PAST, dt("2027-01-01"))
    assert s.window_after(desired(duration="P60D"), NOW, current) == s.Window(NOW, NOW + timedelta(days=60))
    assert s.window_after(desired(permanent=True), NOW) == s.Window(NOW, None)
    assert s.window_after(desired(), NOW, current) == s.Window(NOW, current.end)
    future = dt("2026-12-24T00:00:00Z")
    assert s.window_after(desired(start="2026-12-24T00:00:00Z"), NOW, current) == s.Window(future, current.end)
    assert s.describe(s.Window(NOW, None)) == {"start": "2026-11-29T10:00:00Z", "end": None, "permanent": True}


optional_ends = st.one_of(st.none(), aware_datetimes)


@given(optional_ends, optional_ends)
def test_ends_equal_is_symmetric(a, b):
    assert s.ends_equal(a, b) == s.ends_equal(b, a)


@given(aware_datetimes, st.integers(min_value=-3600, max_value=3600))
def test_ends_equal_tolerance_boundary(a, shift):
    b = a + timedelta(seconds=shift)
    assert s.ends_equal(a, b) == (abs(shift) <= s.END_TOLERANCE.total_seconds())
    assert not s.ends_equal(a, None)


@settings(max_examples=200)
@given(
    aware_datetimes,
    st.integers(min_value=60, max_value=3 * 365 * 86400),
    st.integers(min_value=-59, max_value=59),
)
def test_duration_equals_its_resolved_end(start, seconds, jitter):
    """Whatever the start, 'duration D' equals a schedule ending start+D (± tolerance) (issue 3)."""
    now = start + timedelta(days=1)
    want = s.desired_schedule(duration=s.format_duration(timedelta(seconds=seconds)), now=now)
    current = s.Window(start, start + timedelta(seconds=seconds + jitter))
    assert s.differences(want, current, now) == []
    # were it sent, the scheduleInfo is applied from now, and what Graph then holds matches (no flapping)
    info = s.schedule_info(want, now, current)
    applied = s.applied_window(info, now)
    assert applied == s.Window(now, now + timedelta(seconds=seconds))
    assert s.differences(want, applied, now) == []


@given(aware_datetimes, st.integers(min_value=1, max_value=5 * 365 * 86400))
def test_schedule_info_round_trip_is_no_drift(base, seconds):
    """What we send, read back as Graph echoes it, compares equal to what was asked (no flapping)."""
    now = base
    for want in (
        s.desired_schedule(permanent=True, now=now),
        s.desired_schedule(end=s.format_datetime(now + timedelta(seconds=seconds)), now=now),
        s.desired_schedule(duration=s.format_duration(timedelta(seconds=seconds)), now=now),
    ):
        window = s.window_from_schedule_info(s.schedule_info(want, now))
        later = now + timedelta(seconds=30)
        assert s.differences(want, window, later) == []


# ------------------------------------------------------------------ issue 14: no silent rounding, no overflow


@pytest.mark.parametrize("text", ["PT0.5S", "PT0.999S", "PT0,4S"])
def test_a_duration_below_one_second_is_refused_not_sent_as_pt0s(text):
    """Point 5: what rounds to PT0S once cut to whole seconds (what format_duration sends) is refused."""
    with pytest.raises(InputError) as err:
        s.parse_duration(text, "grants[0].duration")
    assert err.value.msg.startswith("grants[0].duration '%s' must be longer than zero" % text)


def test_a_duration_is_cut_to_the_whole_seconds_that_are_sent():
    delta = s.parse_duration("PT1.5S")
    assert delta == timedelta(seconds=1) and s.format_duration(delta) == "PT1S"


@pytest.mark.parametrize("text", ["P99999999D", "P" + "9" * 400 + "D", "PT99999999999999H"])
def test_a_duration_ending_after_graphs_last_date_is_refused_naming_the_option(text):
    """Point 7: P99999999D used to end in OverflowError when the end was computed."""
    with pytest.raises(InputError) as err:
        s.desired_schedule(duration=text, now=NOW)
    assert err.value.msg.startswith("duration '") and "is too long" in err.value.msg and "9999-12-31" in err.value.msg


def test_a_start_near_graphs_last_date_plus_a_duration_is_refused():
    with pytest.raises(InputError) as err:
        s.desired_schedule(start="9999-12-31T00:00:00Z", duration="P2D", now=NOW)
    assert "duration 'P2D' is too long" in err.value.msg


@pytest.mark.parametrize("option", ["start", "end", "duration"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_schedule_option_is_refused_not_read_as_omitted(option, blank):
    """An unset variable renders as ''; an empty end/duration used to mean "unmanaged" (a new grant permanent)."""
    with pytest.raises(InputError) as err:
        s.desired_schedule(now=NOW, **{option: blank})
    assert err.value.msg.startswith("%s is empty; omit it" % option)


def test_end_after_refuses_an_overflowing_sum():
    with pytest.raises(InputError) as err:
        s.end_after(NOW, timedelta(days=999999999), "expiring_within", "P999999999D")
    assert err.value.msg.startswith("expiring_within 'P999999999D' is too long")
    assert s.end_after(NOW, timedelta(days=1)) == NOW + timedelta(days=1)


def test_a_duration_counted_from_a_schedule_starting_in_9999_is_refused_not_an_overflow():
    """A schedule Graph holds may start on 9999-12-31; P1D from there used to be an OverflowError."""
    desired = s.desired_schedule(duration="P1D", now=NOW)
    current = s.Window(datetime(9999, 12, 31, 12, 0, tzinfo=UTC), None)
    with pytest.raises(InputError) as err:
        s.differences(desired, current, NOW)
    assert err.value.msg.startswith("duration 'P1D' is too long")
