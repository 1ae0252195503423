"""The working-hours clock, in plain Python: nights, weekends, holidays."""
import datetime as dt
import unittest

from ..business_hours import WorkingClock

# Mon-Sat 10:00-19:00 in Asia/Kolkata (UTC+5:30): opens 04:30 UTC, closes
# 13:30 UTC. 2026-01-26 (Monday) is Republic Day.
CLOCK = WorkingClock(weekdays=frozenset(range(6)), opens=dt.time(10),
    closes=dt.time(19), holidays=frozenset({dt.date(2026, 1, 26)}))


def utc(local_text):
    "A naive UTC time from an India time 'YYYY-MM-DD HH:MM'."
    return (dt.datetime.fromisoformat(local_text)
        - dt.timedelta(hours=5, minutes=30))


class WorkingClockTestCase(unittest.TestCase):

    def test_open_within_hours_closed_at_night_on_sunday_and_holidays(self):
        self.assertTrue(CLOCK.is_open(utc('2026-01-27 10:00')))
        self.assertFalse(CLOCK.is_open(utc('2026-01-27 19:00')))
        self.assertFalse(CLOCK.is_open(utc('2026-01-27 23:20')))
        self.assertFalse(CLOCK.is_open(utc('2026-02-01 12:00')))  # Sunday
        self.assertFalse(CLOCK.is_open(utc('2026-01-26 12:00')))  # holiday

    def test_lead_at_2320_waits_for_the_next_morning(self):
        self.assertEqual(CLOCK.next_opening(utc('2026-01-27 23:20')),
            utc('2026-01-28 10:00'))
        self.assertEqual(CLOCK.add_working(utc('2026-01-27 23:20'),
                dt.timedelta(hours=1)), utc('2026-01-28 11:00'))

    def test_open_all_day_runs_through_midnight(self):
        "Closing at 23:59:59 (the desk's latest) is closing at midnight."
        always = WorkingClock(weekdays=frozenset(range(7)), opens=dt.time(0),
            closes=dt.time(23, 59, 59))
        at = utc('2026-01-27 22:50')
        self.assertEqual(always.add_working(at, dt.timedelta(hours=2)),
            utc('2026-01-28 00:50'))
        self.assertEqual(always.working_between(at, utc('2026-01-28 00:50')),
            dt.timedelta(hours=2))
        self.assertTrue(always.is_open(utc('2026-01-27 23:59')
                + dt.timedelta(seconds=59, microseconds=500000)))

    def test_next_opening_while_open_is_now(self):
        at = utc('2026-01-27 15:45')
        self.assertEqual(CLOCK.next_opening(at), at)

    def test_hours_carry_over_the_night(self):
        self.assertEqual(CLOCK.add_working(utc('2026-01-27 18:30'),
                dt.timedelta(hours=1)), utc('2026-01-28 10:30'))

    def test_saturday_evening_to_monday_skips_sunday(self):
        self.assertEqual(CLOCK.add_working(utc('2026-01-31 18:00'),
                dt.timedelta(hours=2)), utc('2026-02-02 11:00'))

    def test_holiday_is_skipped(self):
        # Saturday 24th 18:00 + 2 h: Sunday closed, Monday Republic Day.
        self.assertEqual(CLOCK.add_working(utc('2026-01-24 18:00'),
                dt.timedelta(hours=2)), utc('2026-01-27 11:00'))

    def test_24_working_hours_span_three_working_days(self):
        # 9 h a day: Tue 10:00 + 24 h = Thu 16:00.
        self.assertEqual(CLOCK.add_working(utc('2026-01-27 10:00'),
                dt.timedelta(hours=24)), utc('2026-01-29 16:00'))

    def test_working_between_counts_only_open_time(self):
        self.assertEqual(CLOCK.working_between(utc('2026-01-27 23:20'),
                utc('2026-01-28 10:45')), dt.timedelta(minutes=45))
        self.assertEqual(CLOCK.working_between(utc('2026-01-24 18:00'),
                utc('2026-01-27 11:00')), dt.timedelta(hours=2))
        self.assertEqual(CLOCK.working_between(utc('2026-01-28 12:00'),
                utc('2026-01-28 11:00')), dt.timedelta())

    def test_add_then_between_give_back_the_delta(self):
        start = utc('2026-01-23 17:10')
        for hours in (0.5, 1, 5, 24, 60):
            delta = dt.timedelta(hours=hours)
            with self.subTest(hours=hours):
                self.assertEqual(CLOCK.working_between(
                        start, CLOCK.add_working(start, delta)), delta)

    def test_calendar_without_working_days_is_refused(self):
        with self.assertRaises(ValueError):
            WorkingClock(weekdays=frozenset(), opens=dt.time(10),
                closes=dt.time(19))
