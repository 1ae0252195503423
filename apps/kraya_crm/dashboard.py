"""The dashboard home (static/dashboard/): today's numbers for the signed-in
user's scope, and three charts. A rep (or a field agent) sees their own
leads, deals and tasks; a manager sees everything their record rules let
them read (the whole company's). routes.py checks the session and the
limits, then calls crm.dashboard in a transaction of the signed-in user.

Every figure is of the records the user may read: counts are searches with
access checked, sums run on the SQL Tryton's own search builds with the
user's record rules (board.readable_query), as the reports do. Days and
months are Indian (Asia/Kolkata) over UTC timestamps; the fiscal year runs
April to March."""
import datetime as dt
import json
import urllib.parse
from collections import Counter
from decimal import Decimal

from trytond.model import Model
from trytond.pool import Pool
from trytond.protocols.jsonrpc import JSONEncoder
from trytond.transaction import Transaction, check_access

from .board import Access, grouped_totals
from .contact import format_inr
from .fiscal_year import year_label, year_start
from .message import utcnow
from .my_day import OPEN_LEAD_STATUSES, hot_lead_domain
from .sequence import local_timezone
from .sla import first_response_figures, format_duration

MONTHS_IN_YEAR = 12
RESPONSE_WINDOW = dt.timedelta(days=30)


def utc(local):
    "An Indian wall-clock time as the naive UTC the database keeps."
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def add_months(first, months):
    month = first.month - 1 + months
    return dt.date(first.year + month // 12, month % 12 + 1, 1)


class Calendar:
    "Today, this month and this fiscal year in India, as UTC bounds."

    def __init__(self, now=None):
        zone = local_timezone()
        now = now or utcnow()
        self.now = now
        local = now.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        self.today = local.date()

        def start(date):
            return utc(dt.datetime.combine(date, dt.time(), tzinfo=zone))
        self.day_start = start(self.today)
        self.day_end = start(self.today + dt.timedelta(days=1))
        self.month = self.today.replace(day=1)
        self.month_start = start(self.month)
        self.month_end = start(add_months(self.month, 1))
        self.year = year_start(self.today)
        self.months = [add_months(self.year, i)
            for i in range(MONTHS_IN_YEAR)]
        self.year_start = start(self.year)
        self.year_end = start(add_months(self.year, MONTHS_IN_YEAR))
        self.zone = zone

    def local_month(self, at):
        "The first day of the Indian month of a naive UTC time."
        return at.replace(tzinfo=dt.timezone.utc).astimezone(
            self.zone).date().replace(day=1)


def desk_list_url(model_name, domain, name):
    "The desk's list of a model narrowed to a domain, under a tab name."
    database = Transaction().database.name

    def encoded(value):
        return urllib.parse.quote(json.dumps(value, cls=JSONEncoder,
                separators=(',', ':')), safe='')
    return (f'/#{database}/model/{model_name}'
        f';domain={encoded(domain)}&name={encoded(name)}')


def readable_count(model_name, domain):
    "How many records of the domain the user may read."
    with check_access():
        return Pool().get(model_name).search_count(domain)


def readable_ids(model_name, domain, order=None):
    with check_access():
        return Pool().get(model_name).search(domain, order=order or [],
            query=True)


class Dashboard(Model):
    "What the dashboard page reads."
    __name__ = 'crm.dashboard'
    __string__ = "Dashboard"

    @classmethod
    def is_manager(cls):
        pool = Pool()
        User = pool.get('res.user')
        ModelData = pool.get('ir.model.data')
        return ModelData.get_id('kraya_crm', 'group_crm_manager') in \
            User.get_groups()

    @classmethod
    def figures(cls, now=None):
        "Today's numbers and the charts, of the user's scope."
        calendar = Calendar(now)
        user = Transaction().user
        manager = cls.is_manager()
        access = Access.of_user()
        company = Transaction().context.get('company', -1)
        mine = [] if manager else [('owner', '=', user)]
        leads = [('company', '=', company)] + mine
        deals = [('company', '=', company)] + mine
        tasks = mine
        won = cls.won_deals(deals, calendar, access.value)
        pipeline = cls.pipeline(deals, calendar, access.value)
        return {
            'scope': 'all' if manager else 'mine',
            'today': calendar.today.isoformat(),
            'today_text': calendar.today.strftime('%A %-d %B %Y'),
            'month_text': calendar.month.strftime('%B %Y'),
            'fiscal_year': year_label(calendar.year),
            'show_money': access.value,
            'tiles': [
                cls.new_leads(leads, calendar),
                cls.hot_leads_waiting(leads),
                cls.first_response(leads, calendar),
                cls.tasks_due_today(tasks, calendar),
                cls.tasks_overdue(tasks, calendar),
                won['tile'],
                pipeline['tile'],
                ],
            'target': cls.target(won['month_value'], manager, calendar)
            if access.value else None,
            'charts': {
                'sources': cls.leads_by_source(leads, calendar)
                if access.source else None,
                'funnel': pipeline['funnel'],
                'won_by_month': won['by_month'] if access.value else None,
                },
            }

    # --- Tiles ---

    @staticmethod
    def tile(key, label, value, text=None, detail=None, url=None,
            tone=None):
        return {'key': key, 'label': label, 'value': value,
            'text': text if text is not None else str(value),
            'detail': detail, 'url': url, 'tone': tone}

    @classmethod
    def new_leads(cls, leads, calendar):
        domain = leads + [('create_date', '>=', calendar.day_start),
            ('create_date', '<', calendar.day_end)]
        return cls.tile('new_leads', "New leads today",
            readable_count('crm.lead', domain),
            url=desk_list_url('crm.lead', domain, "New leads today"))

    @classmethod
    def hot_leads_waiting(cls, leads):
        Lead = Pool().get('crm.lead')
        domain = leads + [('status', 'in', OPEN_LEAD_STATUSES),
            ('first_response_at', '=', None)] + hot_lead_domain(Lead)
        count = readable_count('crm.lead', domain)
        return cls.tile('hot_waiting', "Hot leads waiting", count,
            detail="hot, no first response yet",
            url=desk_list_url('crm.lead', domain, "Hot leads waiting"),
            tone='bad' if count else None)

    @classmethod
    def first_response(cls, leads, calendar):
        """The median working time to the first answer over the last 30
        days' leads (a month's start, or a day, has too few)."""
        Lead = Pool().get('crm.lead')
        lead = Lead.__table__()
        ids = readable_ids('crm.lead', leads + [
                ('create_date', '>=', calendar.now - RESPONSE_WINDOW),
                ('create_date', '<', calendar.now),
                ('sla_started_at', '!=', None)])
        cursor = Transaction().connection.cursor()
        cursor.execute(*lead.select(lead.first_response_seconds,
                lead.first_response_at, lead.sla_due_at,
                where=lead.id.in_(ids)))
        figures = first_response_figures(
            (None, *row) for row in cursor)[None]
        median = figures['median_time']
        answered = figures['answered']
        detail = (f"{answered} lead{'' if answered == 1 else 's'} "
            f"answered in {RESPONSE_WINDOW.days} days")
        if figures['within_target'] is not None:
            detail += f", {figures['within_target']:g}% within target"
        return cls.tile('first_response', "First response (median)",
            int(median.total_seconds()) if median is not None else None,
            text=format_duration(median) if median is not None else '—',
            detail=detail)

    @classmethod
    def tasks_due_today(cls, tasks, calendar):
        domain = tasks + [('state', '=', 'open'),
            ('due', '>=', calendar.now), ('due', '<', calendar.day_end)]
        return cls.tile('tasks_today', "Tasks due today",
            readable_count('crm.task', domain), detail="still to do today",
            url=desk_list_url('crm.task', domain, "Tasks due today"))

    @classmethod
    def tasks_overdue(cls, tasks, calendar):
        domain = tasks + [('state', '=', 'open'), ('due', '<', calendar.now)]
        count = readable_count('crm.task', domain)
        return cls.tile('tasks_overdue', "Overdue tasks", count,
            url=desk_list_url('crm.task', domain, "Overdue tasks"),
            tone='bad' if count else None)

    # --- Deals ---

    @classmethod
    def won_deals(cls, deals, calendar, show_money):
        """The deals now won that entered their won stage in this fiscal
        year: this month's tile and the year's value by month."""
        Deal = Pool().get('crm.deal')
        domain = deals + [('stage.kind', '=', 'won'),
            ('stage_entered_at', '>=', calendar.year_start),
            ('stage_entered_at', '<', calendar.year_end)]
        with check_access():
            won = Deal.search(domain, order=[])
            fields_ = ['stage_entered_at'] + (['value'] if show_money else [])
            rows = Deal.read([d.id for d in won], fields_)
        count, value = Counter(), {}
        for row in rows:
            month = calendar.local_month(row['stage_entered_at'])
            count[month] += 1
            value[month] = value.get(month, Decimal(0)) + (
                row.get('value') or Decimal(0))
        month_value = value.get(calendar.month, Decimal(0))
        month_domain = deals + [('stage.kind', '=', 'won'),
            ('stage_entered_at', '>=', calendar.month_start),
            ('stage_entered_at', '<', calendar.month_end)]
        tile = cls.tile('won_month', "Deals won this month",
            count[calendar.month],
            detail=format_inr(month_value) if show_money else None,
            url=desk_list_url('crm.deal', month_domain,
                "Deals won this month"), tone='good')
        return {
            'tile': tile,
            'month_value': month_value,
            'by_month': [{'month': m.strftime('%Y-%m'),
                    'label': m.strftime('%b'), 'count': count[m],
                    'value': str(value.get(m, Decimal(0))),
                    'value_text': format_inr(value.get(m, Decimal(0)))}
                for m in calendar.months],
            }

    @classmethod
    def pipeline(cls, deals, calendar, show_money):
        """The open deals' value and weighted value (value × the stage's
        probability), and the funnel: the open deals in each open stage,
        and the deals that entered a won or lost stage this month (all
        the closed ones of the past would dwarf the pipeline)."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        with check_access():
            stages = Stage.search([],
                order=[('sequence', 'ASC'), ('id', 'ASC')])
        open_totals = grouped_totals(Deal,
            deals + [('stage.kind', '=', 'open')], lambda t: [t.stage],
            lambda t: t.value)
        closed_counts = grouped_totals(Deal, deals + [
                ('stage.kind', '!=', 'open'),
                ('stage_entered_at', '>=', calendar.month_start),
                ('stage_entered_at', '<', calendar.month_end)],
            lambda t: [t.stage], lambda t: t.value)
        value = weighted = Decimal(0)
        funnel = []
        open_count = 0
        for stage in stages:
            totals = open_totals if stage.kind == 'open' else closed_counts
            count, total = totals.get((stage.id,), (0, Decimal(0)))
            funnel.append({'id': stage.id, 'label': stage.rec_name,
                    'kind': stage.kind, 'color': stage.color or '#64748b',
                    'count': count})
            if stage.kind == 'open':
                open_count += count
                value += total
                weighted += (total * stage.probability / 100).quantize(
                    Decimal(1))
        domain = deals + [('stage.kind', '=', 'open')]
        if show_money:
            tile = cls.tile('pipeline', "Open pipeline", str(value),
                text=format_inr(value),
                detail=f"weighted {format_inr(weighted)} · "
                f"{open_count} open deals",
                url=desk_list_url('crm.deal', domain, "Open deals"))
            tile['weighted'] = str(weighted)
            tile['weighted_text'] = format_inr(weighted)
        else:
            tile = cls.tile('pipeline', "Open deals", open_count,
                url=desk_list_url('crm.deal', domain, "Open deals"))
        return {'tile': tile, 'funnel': funnel}

    @classmethod
    def target(cls, won_value, manager, calendar):
        """This month's won value against the target: the rep's own; for a
        manager the teams' targets, else the sum of the reps'."""
        Target = Pool().get('crm.sales.target')
        company = Transaction().context.get('company', -1)
        month = [('company', '=', company), ('month', '=', calendar.month)]
        with check_access():
            if manager:
                targets = Target.search(month + [('team', '!=', None)])
                kind = 'team'
                if not targets:
                    targets = Target.search(month + [('user', '!=', None)])
                    kind = 'reps'
            else:
                targets = Target.search(month + [
                        ('user', '=', Transaction().user)])
                kind = 'rep'
            amount = sum((t.amount for t in targets), Decimal(0)) \
                if targets else None
        return {
            'kind': kind if targets else None,
            'won': str(won_value), 'won_text': format_inr(won_value),
            'amount': str(amount) if amount is not None else None,
            'amount_text': format_inr(amount) if amount is not None else None,
            'percent': round(100 * won_value / amount)
            if amount else None,
            }

    # --- Leads ---

    @classmethod
    def leads_by_source(cls, leads, calendar):
        "This month's leads by source, most first (no source last)."
        pool = Pool()
        Lead = pool.get('crm.lead')
        Source = pool.get('crm.source')
        domain = leads + [('create_date', '>=', calendar.month_start),
            ('create_date', '<', calendar.month_end)]
        totals = grouped_totals(Lead, domain, lambda t: [t.source],
            lambda t: t.budget)
        with check_access(), Transaction().set_context(active_test=False):
            names = {s.id: s.rec_name for s in Source.search([
                        ('id', 'in', [k for k, in totals if k])])}
        rows = [{'id': source, 'label': names.get(source, "No source")
                if source else "No source", 'count': count}
            for (source,), (count, _) in totals.items()]
        rows.sort(key=lambda r: (r['id'] is None, -r['count'], r['label']))
        return rows
