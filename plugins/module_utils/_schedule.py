# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Schedules: parse what the user wrote, build Graph's ``scheduleInfo``, compare by meaning.

Internal to the entra.pim collection: not a public API, may change without notice.

Pure code: no HTTP, no clock of its own (callers pass ``now``), so every rule here is
unit-testable. Two shapes matter:

* ``Desired`` is what the task asks for. ``start=None`` means "now / whenever it already
  started"; ``expiration`` is ``None`` when the task does not manage the end at all.
* ``Window`` is what Graph has: the effective ``(start, end)`` of a schedule or instance,
  ``end=None`` meaning permanent.

Comparison is by meaning, not by string (notes §0: Graph echoes up to 7 fractional digits,
and rewrites a past start to its processing time, notes §3.1), so none of the false drift
other tools suffer from timestamp formats or export times.
"""

from __future__ import annotations

import re
from collections import namedtuple
from datetime import datetime, timedelta, timezone

from ansible_collections.entra.pim.plugins.module_utils._errors import InputError, shown

UTC = timezone.utc

# Two end times this close are the same end. Graph stores what it is sent to the second but
# may round or re-derive it (afterDuration is turned into an end at processing time, and a
# past start is rewritten to the processing time, notes §3.1), and a task computing "now +
# P30D" runs a few seconds after the previous run did. A minute absorbs both without hiding
# any change a person would make on purpose.
END_TOLERANCE = timedelta(seconds=60)

# Expiration kinds, spelled as Graph's expirationPattern.type (notes §3.2).
NO_EXPIRATION = "noExpiration"
AFTER_DATETIME = "afterDateTime"
AFTER_DURATION = "afterDuration"

Desired = namedtuple("Desired", "start expiration end duration")
Desired.__doc__ = """What the task asks for.

start: aware UTC datetime, or None for "now" (and "whenever it already started").
expiration: None (not managed), NO_EXPIRATION, AFTER_DATETIME or AFTER_DURATION.
end: aware UTC datetime when expiration is AFTER_DATETIME.
duration: timedelta when expiration is AFTER_DURATION.
"""

Window = namedtuple("Window", "start end")
Window.__doc__ = "Graph's effective schedule: aware UTC datetimes; start or end None when unset/permanent."

_DATETIME_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?$"
)

_DURATION_RE = re.compile(
    r"^(?P<sign>-)?P(?!$)"
    r"(?:(?P<years>\d+(?:[.,]\d+)?)Y)?"
    r"(?:(?P<months>\d+(?:[.,]\d+)?)M)?"
    r"(?:(?P<weeks>\d+(?:[.,]\d+)?)W)?"
    r"(?:(?P<days>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:[.,]\d+)?)H)?(?:(?P<minutes>\d+(?:[.,]\d+)?)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?$"
)

_DURATION_EXAMPLES = "an ISO 8601 duration such as PT8H, P30D, P2W or P1DT12H"

# The last moment a Graph DateTimeOffset can hold; also the last one Python's datetime can.
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def _num(text):
    return float(text.replace(",", ".")) if text else 0.0


# ---------------------------------------------------------------- datetimes


def parse_datetime(value, option="start"):
    """Parse an ISO 8601 datetime; no timezone means UTC. Returns an aware UTC datetime.

    Accepts Graph's forms too (7 fractional digits, ``Z`` or an offset). Raises InputError
    naming ``option`` when the text is not a datetime.
    """
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        match = _DATETIME_RE.match(text)
        if not match:
            raise InputError(
                "%s '%s' is not an ISO 8601 datetime; expected e.g. 2026-11-29T10:00:00Z "
                "(a time without a timezone is taken as UTC)" % (option, shown(value))
            )
        frac = (match.group("frac") or "")[:6].ljust(6, "0")
        try:
            dt = datetime.strptime(match.group("date"), "%Y-%m-%d").replace(
                hour=int(match.group("h") or 0),
                minute=int(match.group("m") or 0),
                second=int(match.group("s") or 0),
                microsecond=int(frac),
            )
        except ValueError:
            raise InputError(
                "%s '%s' is not a valid datetime: that date or time does not exist (a month, day, hour, minute "
                "or second out of range); expected e.g. 2026-11-29T10:00:00Z" % (option, shown(value))
            ) from None
        tz = match.group("tz")
        if tz and tz not in ("Z", "z"):
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            if offset >= timedelta(hours=24):
                raise InputError("%s '%s' has an invalid UTC offset %s" % (option, value, tz))
            dt = dt.replace(tzinfo=timezone(sign * offset))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_graph_datetime(value):
    """Graph's DateTimeOffset (or None) → aware UTC datetime (or None). Never raises on None/''."""
    if value in (None, ""):
        return None
    return parse_datetime(value, option="Graph timestamp")


def format_datetime(dt):
    """Aware datetime → ``2026-11-29T10:00:00Z`` (UTC, whole seconds), the one form we emit."""
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- durations


def parse_duration(value, option="duration"):
    """ISO 8601 duration → positive timedelta of whole seconds.

    Weeks, days, hours, minutes and (fractional) seconds are exact. Months and years have
    no fixed length, so they are refused with a hint rather than guessed. Graph keeps durations
    to the second and ``format_duration`` sends whole seconds, so the value is cut to whole
    seconds here, and what is then zero or negative is refused: ``PT0.5S`` would otherwise be
    sent as ``PT0S``, and an eligibility cannot end before it starts. Every duration option of
    every module (and pim_policy's durations) is read through here.
    """
    if isinstance(value, timedelta):
        delta = value
    else:
        if not isinstance(value, str):
            raise InputError("%s %r is not a string; expected %s" % (option, value, _DURATION_EXAMPLES))
        text = value.strip().upper()
        match = _DURATION_RE.match(text)
        if not match:
            raise InputError("%s '%s' is not %s" % (option, shown(value), _DURATION_EXAMPLES))
        parts = match.groupdict()
        if parts["years"] or parts["months"]:
            raise InputError(
                "%s '%s' uses years or months, which have no fixed length in Graph; "
                "give days instead (e.g. P365D for a year, P30D for a month): write P365D rather than P1Y"
                % (option, shown(value))
            )
        try:
            delta = timedelta(
                weeks=_num(parts["weeks"]),
                days=_num(parts["days"]),
                hours=_num(parts["hours"]),
                minutes=_num(parts["minutes"]),
                seconds=_num(parts["seconds"]),
            )
        except (OverflowError, ValueError):
            raise InputError(
                "%s '%s' is too long: it would end after %s, the latest date Graph accepts; expected %s, "
                "or no end at all (permanent) where the option allows it"
                % (option, shown(value), LATEST.strftime("%Y-%m-%d"), _DURATION_EXAMPLES)
            )
        if parts["sign"]:
            delta = -delta
    # Graph's precision, and what format_duration sends: whole seconds (towards zero).
    if delta > timedelta(0):
        delta = _whole(delta)
    if delta <= timedelta(0):
        raise InputError(
            "%s '%s' must be longer than zero, and at least one second once cut to whole seconds (Graph keeps "
            "durations to the second, so PT0.5S would be sent as PT0S); expected %s"
            % (option, shown(value), _DURATION_EXAMPLES)
        )
    return delta


def _whole(delta):
    return timedelta(days=delta.days, seconds=delta.seconds)


def end_after(base, delta, option="duration", value=None):
    """``base + delta``, refused (InputError naming ``option``) when it falls after LATEST, Graph's last date."""
    try:
        end = base + delta
    except OverflowError:
        end = None
    if end is None or end > LATEST:
        raise InputError(
            "%s '%s' is too long: it would end after %s, the latest date Graph accepts; expected %s, "
            "or no end at all (permanent) where the option allows it"
            % (
                option,
                shown(value if value is not None else format_duration(delta)),
                LATEST.strftime("%Y-%m-%d"),
                _DURATION_EXAMPLES,
            )
        )
    return end


def format_duration(delta):
    """timedelta → Graph's form ``PnDTnHnMnS`` (``P30D``, ``PT8H``, ``P1DT2H30M``); whole seconds."""
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = sign + "P"
    if days:
        out += "%dD" % days
    if hours or minutes or seconds:
        out += "T"
        if hours:
            out += "%dH" % hours
        if minutes:
            out += "%dM" % minutes
        if seconds:
            out += "%dS" % seconds
    if out in ("P", "-P"):
        out += "T0S"
    return out


# ---------------------------------------------------------------- desired schedule


def _given(value, option):
    """An option's value, or None when omitted. An empty or blank string is refused: it is what an unset
    variable renders to, and reading it as "omitted" would make a new grant permanent without anyone asking."""
    if isinstance(value, str) and not value.strip():
        raise InputError(
            "%s is empty; omit it%s, or give %s"
            % (
                option,
                " (or say 'now')" if option == "start" else " (then the end is not managed)",
                "an ISO 8601 datetime such as 2026-11-29T10:00:00Z" if option != "duration" else _DURATION_EXAMPLES,
            )
        )
    return value


def desired_schedule(start=None, end=None, duration=None, permanent=None, now=None):
    """Validate the task's schedule options and return a ``Desired``.

    ``start`` omitted or ``now`` means now. At most one of ``end``, ``duration`` and
    ``permanent=true``; ``permanent=false`` needs ``end`` or ``duration``. None of them
    means the end is not managed (an existing eligibility keeps its end; a new one gets
    no expiration, as Graph does by default).
    """
    now = now or datetime.now(UTC)
    start, end, duration = (_given(v, o) for v, o in ((start, "start"), (end, "end"), (duration, "duration")))
    start_dt = None
    if start not in (None, "") and str(start).strip().lower() != "now":
        start_dt = parse_datetime(start, "start")

    chosen = [name for name, val in (("end", end), ("duration", duration)) if val not in (None, "")]
    if permanent:
        chosen.insert(0, "permanent")
    if len(chosen) > 1:
        raise InputError(
            "%s cannot be combined: give only one of end (a datetime), duration (an ISO 8601 "
            "duration) or permanent=true" % " and ".join(chosen)
        )
    if permanent is False and not chosen:
        raise InputError(
            "permanent=false needs end or duration to say when the eligibility expires; "
            "leave permanent unset to keep the current end"
        )

    if permanent:
        return Desired(start_dt, NO_EXPIRATION, None, None)
    if end not in (None, ""):
        end_dt = parse_datetime(end, "end")
        if start_dt is not None and end_dt <= start_dt:
            raise InputError(
                "end '%s' is not after start '%s'; end must be later than start"
                % (format_datetime(end_dt), format_datetime(start_dt))
            )
        if start_dt is None and end_dt <= now:
            raise InputError(
                "end '%s' is in the past (now is %s); end must be in the future"
                % (format_datetime(end_dt), format_datetime(now))
            )
        return Desired(start_dt, AFTER_DATETIME, end_dt, None)
    if duration not in (None, ""):
        delta = parse_duration(duration, "duration")
        # The end it asks for must be a date Graph can hold (P99999999D is not).
        end_after(start_dt or now, delta, "duration", duration)
        return Desired(start_dt, AFTER_DURATION, None, delta)
    return Desired(start_dt, None, None, None)


def schedule_info(desired, now, current=None):
    """Graph ``scheduleInfo`` for a request carrying ``desired``.

    ``current`` (a Window) is the schedule being updated: an unset start keeps its start
    (so "duration P30D" keeps meaning "30 days from when it began", the same base the
    comparison uses), and an unmanaged end keeps its end.
    """
    start = desired.start
    if start is None and current is not None and current.start is not None:
        start = current.start
    if start is None or start < now:
        # Graph counts a start in the past from when it processes the request (docs/graph-behaviour.md §1), so the
        # request says so itself: what is sent is what will be applied (and what check mode shows).
        start = now
    info = {"startDateTime": format_datetime(start)}
    kind = desired.expiration
    if kind is None:
        if current is not None and current.end is not None:
            info["expiration"] = {"type": AFTER_DATETIME, "endDateTime": format_datetime(current.end)}
        else:
            info["expiration"] = {"type": NO_EXPIRATION}
    elif kind == NO_EXPIRATION:
        info["expiration"] = {"type": NO_EXPIRATION}
    elif kind == AFTER_DATETIME:
        info["expiration"] = {"type": AFTER_DATETIME, "endDateTime": format_datetime(desired.end)}
    else:
        info["expiration"] = {"type": AFTER_DURATION, "duration": format_duration(desired.duration)}
    return info


# ---------------------------------------------------------------- Graph's side


def window_from_schedule_info(info):
    """Graph ``scheduleInfo`` (of a schedule or request) → Window. ``None`` → permanent, start unknown."""
    if not info:
        return Window(None, None)
    start = parse_graph_datetime(info.get("startDateTime"))
    expiration = info.get("expiration") or {}
    kind = (expiration.get("type") or "").lower()
    if kind == NO_EXPIRATION.lower():
        return Window(start, None)
    # Graph echoes all three keys; an end it computed wins over re-deriving it from a duration.
    end = parse_graph_datetime(expiration.get("endDateTime"))
    if end is None and kind == AFTER_DURATION.lower() and expiration.get("duration") and start is not None:
        end = start + parse_duration(expiration["duration"], "Graph duration")
    return Window(start, end)


def window_from_instance(instance):
    """Graph schedule instance (startDateTime/endDateTime, either may be null) → Window."""
    return Window(
        parse_graph_datetime(instance.get("startDateTime")),
        parse_graph_datetime(instance.get("endDateTime")),
    )


# ---------------------------------------------------------------- comparison


def ends_equal(a, b, tolerance=END_TOLERANCE):
    """Two ends (datetime or None = permanent) mean the same thing. Symmetric."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tolerance


def desired_end(desired, current_start, now):
    """The end ``desired`` asks for, resolved against a schedule starting at ``current_start``.

    Returns (managed, end): managed False when the task does not manage the end.
    A duration is counted from the requested start when one in the future was given,
    otherwise from the schedule's own start (or now, for a schedule yet to be created).
    """
    kind = desired.expiration
    if kind is None:
        return False, None
    if kind == NO_EXPIRATION:
        return True, None
    if kind == AFTER_DATETIME:
        return True, desired.end
    base = desired.start if desired.start is not None and desired.start > now else None
    if base is None:
        base = current_start if current_start is not None else now
    # Counted from a schedule that starts late in 9999, even a short duration has no date to end on.
    return True, end_after(base, desired.duration)


def differences(desired, current, now, tolerance=END_TOLERANCE):
    """What differs between ``desired`` (Desired) and ``current`` (Window), by meaning.

    Returns a list of short, human sentences; empty means equal. Rules:
    * an unset start never differs; a start in the past differs only if the current
      schedule has not started yet; a future start must match within the tolerance;
    * permanent vs expiring always differs; two ends within the tolerance are equal;
    * a duration is resolved against the schedule's start (``desired_end``).
    """
    out = []
    if desired.start is not None:
        cur_start = current.start
        if desired.start > now + tolerance:
            if cur_start is None or abs(cur_start - desired.start) > tolerance:
                out.append(
                    "start: %s -> %s"
                    % (format_datetime(cur_start) or "already started", format_datetime(desired.start))
                )
        elif cur_start is not None and cur_start > now + tolerance:
            out.append(
                "start: %s -> now (start %s is in the past)"
                % (format_datetime(cur_start), format_datetime(desired.start))
            )
    managed, end = desired_end(desired, current.start, now)
    if managed and not ends_equal(end, current.end, tolerance):
        out.append("end: %s -> %s" % (format_datetime(current.end) or "permanent", format_datetime(end) or "permanent"))
    return out


def applied_window(info, now):
    """The Window Graph makes of a request's ``scheduleInfo`` when it processes it at ``now``.

    A start in the past (or none) counts from ``now``, and a duration from that start, as Graph
    does (docs/graph-behaviour.md §1). The one place that predicts an applied schedule from a request body.
    """
    info = info or {}
    start = parse_graph_datetime(info.get("startDateTime"))
    if start is None or start < now:
        start = now
    expiration = info.get("expiration") or {}
    kind = (expiration.get("type") or "").lower()
    if kind == AFTER_DATETIME.lower():
        return Window(start, parse_graph_datetime(expiration.get("endDateTime")))
    if kind == AFTER_DURATION.lower():
        return Window(start, start + parse_duration(expiration.get("duration"), "Graph duration"))
    return Window(start, None)


def window_after(desired, now, current=None):
    """The Window Graph will hold once the request for ``desired`` is processed (for diffs/results).

    Derived from the very ``scheduleInfo`` the request sends, so a plan (and check mode) shows
    what the write will do, never a start or end the write would not produce.
    """
    return applied_window(schedule_info(desired, now, current), now)


def describe(window):
    """Window → the dict shown in diffs and results: start, end, permanent."""
    return {
        "start": format_datetime(window.start),
        "end": format_datetime(window.end),
        "permanent": window.end is None,
    }
