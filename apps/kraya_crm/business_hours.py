"""The business calendar: the days and hours a team works, and its holidays.
Assignment and the speed-to-lead SLA count time on its clock, so a lead
who writes at 23:20 waits for the next opening, not for the night.

Times go in and out naive UTC, as stored; the clock works in the
calendar's zone (Asia/Kolkata), where the opening hours are. The clock
itself (WorkingClock) is plain Python over the calendar's values, so that
it is tested without a database and run over thousands of leads without
a query per lead."""
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin, Index, ModelSQL, ModelView, Unique, fields)
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval

from .exceptions import BusinessCalendarError
from .indexes import CoveredIndexes

WEEKDAYS = [
    ('0', "Monday"), ('1', "Tuesday"), ('2', "Wednesday"),
    ('3', "Thursday"), ('4', "Friday"), ('5', "Saturday"), ('6', "Sunday"),
    ]
# Far enough for any target (a week of hours is 63 working hours) and
# short enough that a calendar of holidays only fails fast.
MAX_DAYS = 800
LAST_SECOND = dt.time(23, 59, 59)


def _utc(local):
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class WorkingClock:
    """Working time of one calendar: the weekdays open (0 is Monday), the
    opening and closing times of each working day, the holidays."""
    weekdays: frozenset
    opens: dt.time
    closes: dt.time
    holidays: frozenset = frozenset()
    zone: str = 'Asia/Kolkata'

    def __post_init__(self):
        if not self.weekdays or self.opens >= self.closes:
            raise ValueError("a working clock needs a working day whose "
                "opening is before its closing")

    @property
    def tzinfo(self):
        return ZoneInfo(self.zone)

    def local(self, at):
        return at.replace(tzinfo=dt.timezone.utc).astimezone(self.tzinfo)

    def is_working_day(self, day):
        return day.weekday() in self.weekdays and day not in self.holidays

    @property
    def till_midnight(self):
        "Closing at 23:59:59, the latest the desk takes, is at midnight."
        return self.closes >= LAST_SECOND

    def window(self, day):
        "The (opening, closing) of a working day, aware, in the zone."
        closes = dt.datetime.combine(day, self.closes, self.tzinfo)
        if self.till_midnight:
            # Open all day is open without a gap at midnight.
            closes = dt.datetime.combine(
                day + dt.timedelta(days=1), dt.time(0), self.tzinfo)
        return dt.datetime.combine(day, self.opens, self.tzinfo), closes

    def windows(self, at):
        "The working windows from `at`'s local day on, in order."
        day = self.local(at).date()
        for _ in range(MAX_DAYS):
            if self.is_working_day(day):
                yield self.window(day)
            day += dt.timedelta(days=1)
        raise ValueError("no working day in %s days" % MAX_DAYS)

    def is_open(self, at):
        local = self.local(at)
        if not self.is_working_day(local.date()):
            return False
        return self.opens <= local.time() and (
            self.till_midnight or local.time() < self.closes)

    def next_opening(self, at):
        "`at` when open, else the start of the next working window."
        local = self.local(at)
        for opens, closes in self.windows(at):
            if local < closes:
                return _utc(max(local, opens))

    def add_working(self, at, delta):
        """The moment `delta` of working time after `at`: nights, closed
        days and holidays do not count. A delta of zero gives the next
        opening: the clock has not started before it."""
        local, left = self.local(at), delta
        for opens, closes in self.windows(at):
            if local >= closes:
                continue
            start = max(local, opens)
            if start + left <= closes:
                return _utc(start + left)
            left -= closes - start

    def working_between(self, start, end):
        "The working time between two moments, as a timedelta."
        total = dt.timedelta()
        if end <= start:
            return total
        local_start, local_end = self.local(start), self.local(end)
        for opens, closes in self.windows(start):
            if opens >= local_end:
                break
            overlap = min(closes, local_end) - max(opens, local_start)
            if overlap > dt.timedelta():
                total += overlap
        return total


class BusinessCalendar(DeactivableMixin, ModelSQL, ModelView):
    "When the team works: the days, the hours and the holidays."
    __name__ = 'crm.business_calendar'
    __string__ = "Business Calendar"
    name = fields.Char("Name", required=True)
    weekdays = fields.MultiSelection(WEEKDAYS, "Working Days", sort=False,
        required=True)
    opens_at = fields.Time("Opens At", required=True,
        help="Local time (Asia/Kolkata) the working day starts.")
    closes_at = fields.Time("Closes At", required=True,
        domain=[('closes_at', '>', Eval('opens_at'))])
    timezone = fields.Char("Time Zone", required=True,
        help="Where the hours are: Asia/Kolkata for India.")
    holidays = fields.One2Many('crm.business_calendar.holiday', 'calendar',
        "Holidays")
    _clock_cache = Cache('crm.business_calendar.clock', context=False)

    @classmethod
    def default_weekdays(cls):
        return ['0', '1', '2', '3', '4', '5']

    @classmethod
    def default_opens_at(cls):
        return dt.time(10, 0)

    @classmethod
    def default_closes_at(cls):
        return dt.time(19, 0)

    @classmethod
    def default_timezone(cls):
        return 'Asia/Kolkata'

    @classmethod
    def validate_fields(cls, calendars, field_names):
        super().validate_fields(calendars, field_names)
        for calendar in calendars:
            try:
                ZoneInfo(calendar.timezone)
            except (ValueError, KeyError):
                raise BusinessCalendarError(gettext(
                        'kraya_crm.msg_calendar_timezone',
                        timezone=calendar.timezone))

    @classmethod
    def on_modification(cls, mode, calendars, field_names=None):
        super().on_modification(mode, calendars, field_names=field_names)
        cls._clock_cache.clear()

    @property
    def clock(self):
        "The calendar's WorkingClock, kept until the calendar changes."
        clock = self._clock_cache.get(self.id)
        if clock is None:
            clock = WorkingClock(
                weekdays=frozenset(int(d) for d in self.weekdays),
                opens=self.opens_at, closes=self.closes_at,
                holidays=frozenset(h.date for h in self.holidays),
                zone=self.timezone)
            self._clock_cache.set(self.id, clock)
        return clock

    def is_open(self, at):
        return self.clock.is_open(at)

    def next_opening(self, at):
        return self.clock.next_opening(at)

    def add_working(self, at, delta):
        return self.clock.add_working(at, delta)

    def working_between(self, start, end):
        return self.clock.working_between(start, end)

    @classmethod
    def get_default(cls):
        "The calendar of the CRM's settings, else the one shipped."
        pool = Pool()
        Configuration = pool.get('crm.configuration')
        ModelData = pool.get('ir.model.data')
        calendar = Configuration(1).business_calendar
        if not calendar:
            calendar = cls(ModelData.get_id(
                    'kraya_crm', 'business_calendar_india'))
        return calendar


class Holiday(CoveredIndexes, ModelSQL, ModelView):
    "A day the team does not work."
    __name__ = 'crm.business_calendar.holiday'
    __string__ = "Holiday"
    calendar = fields.Many2One('crm.business_calendar', "Calendar",
        required=True, ondelete='CASCADE')
    date = fields.Date("Date", required=True)
    name = fields.Char("Name", required=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('calendar')
        t = cls.__table__()
        cls._sql_constraints += [
            ('calendar_date_unique', Unique(t, t.calendar, t.date),
                'kraya_crm.msg_holiday_date_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.calendar, Index.Range()), (t.date, Index.Range())))
        cls._order = [('date', 'ASC'), ('id', 'ASC')]

    @classmethod
    def on_modification(cls, mode, holidays, field_names=None):
        super().on_modification(mode, holidays, field_names=field_names)
        Pool().get('crm.business_calendar')._clock_cache.clear()


class Configuration(metaclass=PoolMeta):
    __name__ = 'crm.configuration'
    business_calendar = fields.Many2One('crm.business_calendar',
        "Business Calendar",
        help="The working hours and holidays that assignment and the "
        "first-response targets count in.")

    @classmethod
    def default_business_calendar(cls):
        ModelData = Pool().get('ir.model.data')
        try:
            return ModelData.get_id('kraya_crm', 'business_calendar_india')
        except KeyError:
            # While the module's own data is being loaded.
            return None
