"""The emulator clock: real UTC time plus an offset that tests can move.

``advance("PT1H")`` moves the clock forward; ``set("2030-01-01T00:00:00Z")`` jumps to a
given instant. Either way the clock keeps ticking in real time from there (it is never
frozen). The offset is kept in the store's meta (key ``clock_offset_seconds``) so it
survives a restart; a reset of the sandbox puts the clock back to real time.

The clock stays between ``EARLIEST`` and ``LATEST``: a move beyond them is refused
(ValueError) and leaves the clock where it was. Beyond, dates stop being representable (Python's
datetime and Graph's DateTimeOffset end at year 9999), and the PIM routes add durations of up
to years to "now", so the upper bound keeps a thousand years of room (README, control API).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)

META_KEY = "clock_offset_seconds"
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 duration (days and smaller, plus weeks) -> timedelta. ValueError if malformed."""
    if not isinstance(text, str):
        raise ValueError("duration must be a string")
    m = _DURATION.match(text.strip())
    if not m or text.strip().upper() in ("P", "PT", "-P", "-PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"invalid ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in m.groupdict().items() if k != "sign" and v is not None}
    try:
        delta = timedelta(**parts)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too large") from None
    return -delta if m.group("sign") else delta


def parse_datetime(text: str) -> datetime:
    """ISO 8601 timestamp -> aware UTC datetime (timezone-less input is UTC; up to 7 fraction digits)."""
    if not isinstance(text, str):
        raise ValueError("timestamp must be a string")
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", s)
    if m:  # Python accepts at most 6 fraction digits; Graph sends 7
        s = m.group(1) + "." + m.group(2)[:6].ljust(6, "0") + m.group(3)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_datetime(dt: datetime) -> str:
    """Aware datetime -> ``2026-11-29T10:00:00Z`` (fraction kept only when non-zero)."""
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def range_message() -> str:
    return (
        f"the sandbox clock must stay between {format_datetime(EARLIEST)} and {format_datetime(LATEST)}; "
        "the clock was not moved"
    )


class Clock:
    def __init__(self, offset_seconds: float = 0.0):
        self._offset = timedelta(0)
        self._lock = threading.Lock()
        if offset_seconds:
            self._offset = self._checked(timedelta(seconds=offset_seconds))

    @classmethod
    def restored(cls, offset_seconds) -> Clock:
        """The clock from a persisted offset; real time if that offset is unusable."""
        try:
            return cls(float(offset_seconds or 0.0))
        except (TypeError, ValueError, OverflowError):
            return cls()

    @staticmethod
    def _checked(offset: timedelta) -> timedelta:
        """``offset`` if real time plus it lies in [EARLIEST, LATEST]; else ValueError."""
        try:
            when = datetime.now(timezone.utc) + offset
        except OverflowError:
            when = None
        if when is None or not EARLIEST <= when <= LATEST:
            raise ValueError(range_message())
        return offset

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._offset

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            try:
                offset = self._offset + delta
            except OverflowError:
                offset = timedelta.max
            self._offset = self._checked(offset)
            return self.now()

    def set(self, when: datetime) -> datetime:
        with self._lock:
            self._offset = self._checked(when - datetime.now(timezone.utc))
            return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = timedelta(0)
