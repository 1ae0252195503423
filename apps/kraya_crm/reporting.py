"""The manager's reports in the desk: the funnel, the sources, the reps and
the lost reasons, as Tryton's own reporting models (SQL table_query,
read-only, filtered by the context model crm.reporting.context).

Each report is built on the records the user may read: the leads, deals,
tasks and stage changes come from Model.search(domain, query=True), which
applies the user's record rules, so a rep's report holds the numbers of
their own leads and deals (and their team's unassigned ones), as their
lists do. The filters (period, team, owner, source) are clauses of those
same domains.

The period is of Indian dates (Asia/Kolkata) over UTC timestamps; it
defaults to this Indian fiscal year, April to March."""
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from sql import Literal, Null, Select, Union
from sql.aggregate import Avg, Count, Max, Min, Sum
from sql.conditionals import Case, Coalesce
from sql.functions import Round
from sql.operators import Exists

from trytond.model import ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.transaction import Transaction

from .fiscal_year import year_start
from .sla import first_response_figures
from .spreadsheet import FormulaSafeExport

ZONE = ZoneInfo('Asia/Kolkata')
FILTERS = ('from_date', 'to_date', 'team', 'owner', 'source')
# Rows read under other filters are other rows: the transaction's record
# cache must tell them apart (as company.py does for 'company').
Transaction.cache_keys.update(FILTERS)


def period_dates():
    "The context's (from, to) dates, both included: this fiscal year else."
    context = Transaction().context
    start = year_start(dt.date.today())
    from_date = context.get('from_date') or start
    to_date = context.get('to_date') or start.replace(
        year=start.year + 1) - dt.timedelta(days=1)
    return from_date, to_date


def period():
    """The period as naive UTC timestamps [start, end): from the Indian
    midnight starting from_date to the one ending to_date."""
    from_date, to_date = period_dates()

    def utc(date):
        local = dt.datetime.combine(date, dt.time(), tzinfo=ZONE)
        return local.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return utc(from_date), utc(to_date + dt.timedelta(days=1))


def in_period(column):
    start, end = period()
    return (column >= start) & (column < end)


def filters(team='team', owner='owner', source='source'):
    """The context's team, owner and source as a domain, each on the path
    given (None: the filter does not apply to the model)."""
    context = Transaction().context
    domain = []
    for path, key in [(team, 'team'), (owner, 'owner'), (source, 'source')]:
        value = context.get(key)
        if value is None or path is None:
            continue
        if isinstance(path, list):
            domain.append(['OR'] + [(p, '=', value) for p in path])
        else:
            domain.append((path, '=', value))
    return domain


def company_domain():
    return [('company', '=', Transaction().context.get('company', -1))]


def readable_leads():
    "The ids of the leads of the period the user may read, filtered."
    Lead = Pool().get('crm.lead')
    start, end = period()
    return Lead.search(company_domain() + filters() + [
            ('create_date', '>=', start), ('create_date', '<', end)],
        order=[], query=True)


def readable_deals():
    "The ids of the deals the user may read, filtered (any date)."
    Deal = Pool().get('crm.deal')
    return Deal.search(company_domain() + filters(source='lead.source'),
        order=[], query=True)


def readable_tasks():
    "The ids of the tasks the user may read, filtered (any date)."
    Task = Pool().get('crm.task')
    return Task.search(filters(team='owner.crm_teams',
            source=['lead.source', 'deal.lead.source']),
        order=[], query=True)


def company_currency():
    Company = Pool().get('company.company')
    company = Transaction().context.get('company')
    if company is not None and company >= 0:
        return Company(company).currency.id


def percent(part, whole):
    "part of whole in %, one decimal; None of nothing."
    if not whole or part is None:
        return None
    return round(100 * part / whole, 1)


def value_sum(deal):
    """The sum of deals' values, rounded to the company currency's digits:
    SQLite sums the text it stores as floating point."""
    pool = Pool()
    Deal = pool.get('crm.deal')
    Company = pool.get('company.company')
    company = Transaction().context.get('company')
    digits = Company(company).currency.digits if (
        company is not None and company >= 0) else 2
    return Coalesce(Round(Sum(Deal.value.sql_cast(deal.value)), digits), 0)


def no_timestamps():
    "The columns every ModelSQL reads, for a report of no one's making."
    return [Literal(0).as_('create_uid'), Literal(None).as_('create_date'),
        Literal(None).as_('write_uid'), Literal(None).as_('write_date')]


class ReportingContext(ModelView):
    "CRM Reports Filters"
    __name__ = 'crm.reporting.context'
    __string__ = "CRM Reports Filters"
    from_date = fields.Date("From", required=True)
    to_date = fields.Date("To", required=True)
    team = fields.Many2One('crm.team', "Team")
    owner = fields.Many2One('res.user', "Owner")
    source = fields.Many2One('crm.source', "Source")

    @classmethod
    def default_from_date(cls):
        return year_start(dt.date.today())

    @classmethod
    def default_to_date(cls):
        start = year_start(dt.date.today())
        return start.replace(year=start.year + 1) - dt.timedelta(days=1)


class Report(FormulaSafeExport, ModelSQL, ModelView):
    "What the reports share: rates from their counts."
    __slots__ = ()

    @classmethod
    def get_rate(cls, rows, names):
        "Each rate field is {name: (count field, of count field)}."
        return {name: {row.id: percent(getattr(row, cls._rates[name][0]),
                        getattr(row, cls._rates[name][1]))
                for row in rows}
            for name in names}


class Funnel(Report):
    """One row per pipeline stage, in order: the deals that entered it in
    the period, how many of them went on to a later stage, to Won, or were
    lost from it, and how long deals stayed in it."""
    __name__ = 'crm.reporting.funnel'
    __string__ = "Funnel"
    stage = fields.Many2One('crm.stage', "Stage")
    sequence = fields.Integer("Sequence")
    kind = fields.Selection([
            ('open', "Open"), ('won', "Won"), ('lost', "Lost"),
            ], "Kind")
    reached = fields.Integer("Reached",
        help="Deals that entered the stage in the period.")
    moved_on = fields.Integer("Moved On",
        help="Of those, the deals that later entered a later stage (open "
        "or won), whenever.")
    won = fields.Integer("Won", help="Of those, the deals later won.")
    lost_here = fields.Integer("Lost Here",
        help="Of those, the deals lost from this stage.")
    next_rate = fields.Function(fields.Float("To Next %",
            digits=(3, 1)), 'get_rate')
    won_rate = fields.Function(fields.Float("To Won %", digits=(3, 1)),
        'get_rate')
    drop_rate = fields.Function(fields.Float("Drop-off %", digits=(3, 1),
            help="Of the deals that reached the stage, the share lost "
            "from it."), 'get_rate')
    average_time = fields.TimeDelta("Average Time in Stage (Exact)",
        help="The average time the deals that left the stage in the period "
        "had spent in it.")
    time_in_stage = fields.Function(fields.TimeDelta("Time in Stage",
            help="The average time the deals that left the stage in the "
            "period had spent in it, to the minute."), 'get_time_in_stage')
    _rates = {'next_rate': ('moved_on', 'reached'),
        'won_rate': ('won', 'reached'), 'drop_rate': ('lost_here', 'reached')}

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('sequence', 'ASC NULLS FIRST'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        pool = Pool()
        Stage = pool.get('crm.stage')
        History = pool.get('crm.deal.stage_history')
        stage, entered, later = (Stage.__table__() for _ in range(3))
        history, move, moved = (History.__table__() for _ in range(3))
        deals = readable_deals()
        # Each deal once per stage it entered in the period.
        cohort = history.select(history.deal.as_('deal'),
            history.to_stage.as_('stage'),
            where=in_period(history.changed_at) & history.deal.in_(deals),
            group_by=[history.deal, history.to_stage])

        def went(condition):
            "1 when the cohort's deal ever entered a stage of condition."
            return Case((Exists(move.join(later,
                            condition=move.to_stage == later.id).select(
                            Literal(1), where=(move.deal == cohort.deal)
                            & condition)), 1), else_=0)
        counts = cohort.join(entered,
            condition=cohort.stage == entered.id).select(
            cohort.stage.as_('stage'),
            Count(Literal(1)).as_('reached'),
            Sum(went((later.kind != 'lost')
                    & (later.sequence > entered.sequence))).as_('moved_on'),
            Sum(went(later.kind == 'won')).as_('won'),
            Sum(went((move.from_stage == cohort.stage)
                    & (later.kind == 'lost'))).as_('lost_here'),
            group_by=[cohort.stage])
        left = moved.select(moved.from_stage.as_('stage'),
            Avg(moved.time_in_previous).as_('average_time'),
            where=in_period(moved.changed_at) & moved.deal.in_(deals)
            & (moved.from_stage != Null) & (moved.time_in_previous != Null),
            group_by=[moved.from_stage])
        return (stage
            .join(counts, 'LEFT', condition=counts.stage == stage.id)
            .join(left, 'LEFT', condition=left.stage == stage.id)
            .select(stage.id.as_('id'), *no_timestamps(),
                stage.id.as_('stage'), stage.sequence.as_('sequence'),
                stage.kind.as_('kind'),
                Coalesce(counts.reached, 0).as_('reached'),
                Coalesce(counts.moved_on, 0).as_('moved_on'),
                Coalesce(counts.won, 0).as_('won'),
                Coalesce(counts.lost_here, 0).as_('lost_here'),
                left.average_time.as_('average_time'),
                where=stage.active == Literal(True)))

    def get_time_in_stage(self, name):
        "To the minute: a manager reads days and hours, not microseconds."
        if self.average_time is not None:
            return dt.timedelta(minutes=round(
                    self.average_time.total_seconds() / 60))

    @classmethod
    def get_rate(cls, rows, names):
        "Nothing moves on from a closed stage: its rates are empty."
        result = super().get_rate(rows, names)
        for name in {'next_rate', 'won_rate'} & set(names):
            for row in rows:
                if row.kind != 'open':
                    result[name][row.id] = None
        return result


class Source(Report):
    """Per lead source, the leads created in the period: how many were
    converted, and their deals won and the value won; with what the source
    cost in the period's months, per lead and per deal won."""
    __name__ = 'crm.reporting.source'
    __string__ = "Lead Sources"
    source = fields.Many2One('crm.source', "Source")
    leads = fields.Integer("Leads", help="Leads created in the period.")
    converted = fields.Integer("Converted")
    converted_rate = fields.Function(fields.Float("Converted %",
            digits=(3, 1)), 'get_rate')
    won_deals = fields.Integer("Won Deals",
        help="Deals of these leads in a won stage.")
    currency = fields.Many2One('currency.currency', "Currency")
    won_value = Monetary("Won Value", currency='currency',
        digits='currency', help="In the company's currency.")
    cost = Monetary("Cost", currency='currency', digits='currency',
        help="What the source cost in the months of the period "
        "(CRM › Configuration › Lead Sources › Lead Source Costs).")
    cost_per_lead = fields.Function(Monetary("Cost per Lead",
            currency='currency', digits='currency'), 'get_cost_per')
    cost_per_won = fields.Function(Monetary("Cost per Deal Won",
            currency='currency', digits='currency'), 'get_cost_per')
    _rates = {'converted_rate': ('converted', 'leads')}
    _costs_per = {'cost_per_lead': 'leads', 'cost_per_won': 'won_deals'}

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('leads', 'DESC'), ('id', 'ASC')]

    @classmethod
    def get_cost_per(cls, rows, names):
        "The cost over a count; none without a cost or with nothing counted."
        def per(row, count):
            if not row.cost or not count:
                return None
            return row.currency.round(row.cost / count)
        return {name: {row.id: per(row, getattr(row, cls._costs_per[name]))
                for row in rows}
            for name in names}

    @classmethod
    def table_query(cls):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        Source = pool.get('crm.source')
        Cost = pool.get('crm.source.cost')
        lead, deal_lead = Lead.__table__(), Lead.__table__()
        deal, stage = Deal.__table__(), Stage.__table__()
        source, cost = Source.__table__(), Cost.__table__()
        leads = readable_leads()
        currency = company_currency()
        from_date, to_date = period_dates()
        counts = lead.select(lead.source.as_('source'),
            Count(lead.id).as_('leads'),
            Sum(Case((lead.status == 'converted', 1), else_=0)
                ).as_('converted'),
            where=lead.id.in_(leads) & (lead.source != Null),
            group_by=[lead.source])
        won = (deal
            .join(deal_lead, condition=deal.lead == deal_lead.id)
            .join(stage, condition=deal.stage == stage.id)
            .select(deal_lead.source.as_('source'),
                Count(deal.id).as_('won_deals'),
                value_sum(deal).as_('won_value'),
                where=(stage.kind == 'won') & deal_lead.id.in_(leads)
                & deal.id.in_(readable_deals())
                & (deal.currency == (currency or -1)),
                group_by=[deal_lead.source]))
        # The months the period touches: a source's month of ads counts
        # whole in a period that starts or ends within it.
        context = Transaction().context
        in_costs = ((cost.company == context.get('company', -1))
            & (cost.month >= from_date.replace(day=1))
            & (cost.month <= to_date))
        if context.get('source') is not None:
            in_costs &= cost.source == context['source']
        costs = cost.select(cost.source.as_('source'),
            Sum(Cost.amount.sql_cast(cost.amount)).as_('cost'),
            where=in_costs, group_by=[cost.source])
        # Every source with leads or a cost: one that cost money and
        # brought no lead is the first a manager wants to see.
        return (source
            .join(counts, 'LEFT', condition=counts.source == source.id)
            .join(won, 'LEFT', condition=won.source == source.id)
            .join(costs, 'LEFT', condition=costs.source == source.id)
            .select(source.id.as_('id'), *no_timestamps(),
                source.id.as_('source'),
                Coalesce(counts.leads, 0).as_('leads'),
                Coalesce(counts.converted, 0).as_('converted'),
                Coalesce(won.won_deals, 0).as_('won_deals'),
                Literal(currency).as_('currency'),
                cls.won_value.sql_cast(
                    Coalesce(won.won_value, 0)).as_('won_value'),
                cls.cost.sql_cast(costs.cost).as_('cost'),
                where=(counts.source != Null) | (costs.source != Null)))


class Rep(Report):
    """Per owner: the leads of the period they own and how fast they
    answered them, the tasks they did and the deals they won in it."""
    __name__ = 'crm.reporting.rep'
    __string__ = "Reps"
    user = fields.Many2One('res.user', "Owner")
    leads = fields.Integer("Leads Owned",
        help="Leads created in the period that they own.")
    median_first_response = fields.Function(fields.TimeDelta(
            "First Response (Median)",
            help="Working time from the lead's capture to its first "
            "answer, the median over the period's answered leads."),
        'get_first_response')
    within_sla = fields.Function(fields.Float("Within SLA %", digits=(3, 1),
            help="Of the period's answered leads, the share answered by "
            "their first-response target."), 'get_first_response')
    tasks_done = fields.Integer("Tasks Done",
        help="Tasks assigned to them done in the period.")
    won_deals = fields.Integer("Deals Won",
        help="Their deals that entered a won stage in the period and are "
        "still won.")
    currency = fields.Many2One('currency.currency', "Currency")
    won_value = Monetary("Won Value", currency='currency',
        digits='currency', help="In the company's currency.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('won_value', 'DESC'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Task = pool.get('crm.task')
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        History = pool.get('crm.deal.stage_history')
        lead, task, deal = Lead.__table__(), Task.__table__(), Deal.__table__()
        stage, history = Stage.__table__(), History.__table__()
        currency = company_currency()
        owned = lead.select(lead.owner.as_('user'),
            Count(lead.id).as_('leads'),
            where=lead.id.in_(readable_leads()) & (lead.owner != Null),
            group_by=[lead.owner])
        done = task.select(task.owner.as_('user'),
            Count(task.id).as_('tasks_done'),
            where=task.id.in_(readable_tasks()) & (task.state == 'done')
            & in_period(task.done_at) & (task.owner != Null),
            group_by=[task.owner])
        won_in_period = history.join(stage,
            condition=history.to_stage == stage.id).select(history.deal,
            where=(stage.kind == 'won') & in_period(history.changed_at))
        won_stage = Stage.__table__()
        won = deal.join(won_stage,
            condition=deal.stage == won_stage.id).select(
            deal.owner.as_('user'), Count(deal.id).as_('won_deals'),
            value_sum(deal).as_('won_value'),
            where=(won_stage.kind == 'won') & deal.id.in_(won_in_period)
            & deal.id.in_(readable_deals()) & (deal.owner != Null)
            & (deal.currency == (currency or -1)),
            group_by=[deal.owner])
        users = Union(owned.select(owned.user), done.select(done.user),
            won.select(won.user))
        return (users
            .join(owned, 'LEFT', condition=owned.user == users.user)
            .join(done, 'LEFT', condition=done.user == users.user)
            .join(won, 'LEFT', condition=won.user == users.user)
            .select(users.user.as_('id'), *no_timestamps(),
                users.user.as_('user'),
                Coalesce(owned.leads, 0).as_('leads'),
                Coalesce(done.tasks_done, 0).as_('tasks_done'),
                Coalesce(won.won_deals, 0).as_('won_deals'),
                Literal(currency).as_('currency'),
                cls.won_value.sql_cast(
                    Coalesce(won.won_value, 0)).as_('won_value')))

    @classmethod
    def get_first_response(cls, rows, names):
        """The median and the share within SLA over the owners' answered
        leads of the period (the rows the report counts), in one query."""
        Lead = Pool().get('crm.lead')
        lead = Lead.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*lead.select(lead.owner, lead.first_response_seconds,
                lead.first_response_at, lead.sla_due_at,
                where=lead.id.in_(readable_leads())
                & lead.owner.in_([r.user.id for r in rows] or [-1])
                & (lead.sla_started_at != Null)))
        figures = first_response_figures(cursor)
        keys = {'median_first_response': 'median_time',
            'within_sla': 'within_target'}
        return {name: {row.id: figures[row.user.id][keys[name]]
                for row in rows}
            for name in names}


class LostReason(Report):
    """The deals lost in the period (and still lost), by their reason, the
    stage they were lost from and their lead's source."""
    __name__ = 'crm.reporting.lost_reason'
    __string__ = "Lost Reasons"
    reason = fields.Text("Lost Reason")
    from_stage = fields.Many2One('crm.stage', "Lost From Stage")
    source = fields.Many2One('crm.source', "Source")
    deals = fields.Integer("Deals")
    currency = fields.Many2One('currency.currency', "Currency")
    value = Monetary("Value", currency='currency', digits='currency',
        help="The lost deals' value, in the company's currency.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('deals', 'DESC'), ('value', 'DESC'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        History = pool.get('crm.deal.stage_history')
        deal, lead = Deal.__table__(), Lead.__table__()
        stage, lost_stage = Stage.__table__(), Stage.__table__()
        history, last = History.__table__(), History.__table__()
        currency = company_currency()
        deals = readable_deals()
        # The deal's last move into a lost stage, when it is in the period.
        last_lost = history.join(lost_stage,
            condition=history.to_stage == lost_stage.id).select(
            history.deal.as_('deal'), Max(history.id).as_('move'),
            where=(lost_stage.kind == 'lost') & history.deal.in_(deals),
            group_by=[history.deal])
        query = (deal
            .join(stage, condition=deal.stage == stage.id)
            .join(last_lost, condition=last_lost.deal == deal.id)
            .join(last, condition=last.id == last_lost.move)
            .join(lead, 'LEFT', condition=deal.lead == lead.id)
            .select(Min(deal.id).as_('id'), *no_timestamps(),
                deal.lost_reason.as_('reason'),
                last.from_stage.as_('from_stage'),
                lead.source.as_('source'),
                Count(deal.id).as_('deals'),
                Literal(currency).as_('currency'),
                cls.value.sql_cast(value_sum(deal)).as_('value'),
                where=(stage.kind == 'lost') & in_period(last.changed_at)
                & (deal.currency == (currency or -1)),
                group_by=[deal.lost_reason, last.from_stage, lead.source]))
        return query


def readable_enrollments():
    """The ids of the enrollments of the period (enrolled in it) whose lead
    the user may read, filtered by the lead's team, owner and source."""
    Enrollment = Pool().get('crm.enrollment')
    start, end = period()
    return Enrollment.search([
            ('lead.company', '=', Transaction().context.get('company', -1)),
            ('enrolled_at', '>=', start), ('enrolled_at', '<', end),
            ] + filters(team='lead.team', owner='lead.owner',
            source='lead.source'), order=[], query=True)


# A step's message that reached the lead: what a reply or an opt-out
# answers.
WENT_OUT = ['sent', 'delivered', 'read']


def replies(enrollments):
    "(enrollment, at): when the enrollments' leads last wrote back."
    Enrollment = Pool().get('crm.enrollment')
    enrollment = Enrollment.__table__()
    return enrollment.select(enrollment.id.as_('enrollment'),
        enrollment.replied_at.as_('at'),
        where=enrollment.id.in_(enrollments)
        & (enrollment.replied_at != Null))


def opt_outs(enrollments):
    """(enrollment, at): when the enrollments' leads first opted out of a
    channel after they were enrolled (a sequence may go on with the other
    channel, or stop)."""
    pool = Pool()
    Enrollment = pool.get('crm.enrollment')
    Consent = pool.get('crm.lead.consent')
    enrollment, consent = Enrollment.__table__(), Consent.__table__()
    return enrollment.join(consent, condition=(
            consent.lead == enrollment.lead)
        & (consent.state == 'opted_out')
        & (consent.opted_out_at >= enrollment.enrolled_at)
        ).select(enrollment.id.as_('enrollment'),
            Min(consent.opted_out_at).as_('at'),
            where=enrollment.id.in_(enrollments),
            group_by=[enrollment.id])


def after_last_step(answers):
    """(step, count) of answers (enrollment, at), each counted against the
    last step that went out to its enrollment before it."""
    Message = Pool().get('crm.message')
    message, last = Message.__table__(), Message.__table__()
    lasts = answers.join(message, condition=(
            message.enrollment == answers.enrollment)
        & (message.step != Null) & message.status.in_(WENT_OUT)
        & (message.at <= answers.at)
        ).select(answers.enrollment.as_('enrollment'),
            Max(message.id).as_('message'),
            group_by=[answers.enrollment])
    return lasts.join(last, condition=last.id == lasts.message).select(
        last.step.as_('step'), Count(lasts.enrollment).as_('count'),
        group_by=[last.step])


class SequenceStep(Report):
    """Per step of a follow-up sequence, the enrollments of the period it
    went out to, and how many leads replied or opted out after it (it was
    the last step they got before)."""
    __name__ = 'crm.reporting.sequence_step'
    __string__ = "Follow-up Steps"
    sequence = fields.Many2One('crm.sequence', "Sequence")
    step = fields.Many2One('crm.sequence.step', "Step")
    position = fields.Integer("Position")
    reached = fields.Integer("Reached",
        help="Enrollments this step went out to (sent, delivered or read).")
    replied = fields.Integer("Replied",
        help="Leads who wrote back after this step, the last they got.")
    reply_rate = fields.Function(fields.Float("Reply %", digits=(3, 1)),
        'get_rate')
    opted_out = fields.Integer("Opted Out",
        help="Leads who opted out after this step, the last they got.")
    opt_out_rate = fields.Function(fields.Float("Opt-out %", digits=(3, 1)),
        'get_rate')
    _rates = {'reply_rate': ('replied', 'reached'),
        'opt_out_rate': ('opted_out', 'reached')}

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('sequence', 'ASC'), ('position', 'ASC'),
            ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        pool = Pool()
        Message = pool.get('crm.message')
        Step = pool.get('crm.sequence.step')
        message, step = Message.__table__(), Step.__table__()
        enrollments = readable_enrollments()
        reached = message.select(message.step.as_('step'),
            Count(message.enrollment, distinct=True).as_('reached'),
            where=(message.step != Null) & message.status.in_(WENT_OUT)
            & message.enrollment.in_(enrollments),
            group_by=[message.step])
        replied = after_last_step(replies(enrollments))
        opted_out = after_last_step(opt_outs(enrollments))
        return (step
            .join(reached, condition=reached.step == step.id)
            .join(replied, 'LEFT', condition=replied.step == step.id)
            .join(opted_out, 'LEFT', condition=opted_out.step == step.id)
            .select(step.id.as_('id'), *no_timestamps(),
                step.sequence.as_('sequence'), step.id.as_('step'),
                step.position.as_('position'),
                reached.reached.as_('reached'),
                Coalesce(replied.count, 0).as_('replied'),
                Coalesce(opted_out.count, 0).as_('opted_out')))


class Sequence(Report):
    """Per follow-up sequence, its enrollments of the period: how many
    replied, opted out, ran every step, and are still running."""
    __name__ = 'crm.reporting.sequence'
    __string__ = "Follow-up Sequences"
    sequence = fields.Many2One('crm.sequence', "Sequence")
    enrolled = fields.Integer("Enrolled", help="Enrolled in the period.")
    replied = fields.Integer("Replied")
    reply_rate = fields.Function(fields.Float("Reply %", digits=(3, 1)),
        'get_rate')
    opted_out = fields.Integer("Opted Out",
        help="Leads who opted out of a channel after they were enrolled.")
    opt_out_rate = fields.Function(fields.Float("Opt-out %", digits=(3, 1)),
        'get_rate')
    completed = fields.Integer("Completed",
        help="Went through every step.")
    running = fields.Integer("Running", help="Active or paused now.")
    _rates = {'reply_rate': ('replied', 'enrolled'),
        'opt_out_rate': ('opted_out', 'enrolled')}

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('enrolled', 'DESC'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        Enrollment = Pool().get('crm.enrollment')
        enrollment = Enrollment.__table__()
        enrollments = readable_enrollments()
        opted = opt_outs(enrollments)

        def count(condition):
            return Sum(Case((condition, 1), else_=0))
        return enrollment.join(opted, 'LEFT',
            condition=opted.enrollment == enrollment.id
            ).select(enrollment.sequence.as_('id'),
                *no_timestamps(), enrollment.sequence.as_('sequence'),
                Count(enrollment.id).as_('enrolled'),
                count(enrollment.replied_at != Null).as_('replied'),
                count(opted.enrollment != Null).as_('opted_out'),
                count(enrollment.state == 'completed').as_('completed'),
                count(enrollment.state.in_(['active', 'paused'])
                    ).as_('running'),
                where=enrollment.id.in_(enrollments),
                group_by=[enrollment.sequence])


# Fewer closed deals than this make no rate: the next coarser one is used.
MIN_CLOSED = 5


def period_months():
    "The first days of the months the period touches, in order."
    from_date, to_date = period_dates()
    months, month = [], from_date.replace(day=1)
    while month <= to_date:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return months


def month_of(date):
    return date.replace(day=1) if date else None


def won_rates():
    """{(stage, source): rate, (stage, None): rate} of the deals the user
    may read that entered the stage and are closed now: the share won,
    from MIN_CLOSED closed deals up; by stage and lead source, and by
    stage alone (key source None)."""
    pool = Pool()
    Deal = pool.get('crm.deal')
    Stage = pool.get('crm.stage')
    Lead = pool.get('crm.lead')
    History = pool.get('crm.deal.stage_history')
    history, deal = History.__table__(), Deal.__table__()
    stage, lead = Stage.__table__(), Lead.__table__()
    cursor = Transaction().connection.cursor()
    closed = stage.kind.in_(['won', 'lost'])
    rates = {}
    for by_source in [False, True]:
        source = lead.source if by_source else Literal(None)
        cursor.execute(*history
            .join(deal, condition=history.deal == deal.id)
            .join(stage, condition=deal.stage == stage.id)
            .join(lead, 'LEFT', condition=deal.lead == lead.id)
            .select(history.to_stage, source,
                Count(Case((closed, deal.id)), distinct=True),
                Count(Case((stage.kind == 'won', deal.id)), distinct=True),
                where=deal.id.in_(readable_deals()),
                group_by=[history.to_stage] + (
                    [lead.source] if by_source else [])))
        for stage_id, source_id, closed_count, won_count in cursor:
            if closed_count >= MIN_CLOSED:
                rates[stage_id, source_id] = (
                    Decimal(won_count) / Decimal(closed_count))
    return rates


class Forecast(Report):
    """Per month of the period: the open deals expected to close in it,
    their value, weighted by the stage's probability and by the win rate
    history shows for their stage and source; the value won in it; and
    the month's target."""
    __name__ = 'crm.reporting.forecast'
    __string__ = "Forecast"
    month = fields.Char("Month")
    currency = fields.Function(fields.Many2One(
            'currency.currency', "Currency"), 'get_figures')
    open_deals = fields.Function(fields.Integer("Open Deals",
            help="Open deals expected to close in the month."),
        'get_figures')
    pipeline = fields.Function(Monetary("Pipeline", currency='currency',
            digits='currency'), 'get_figures')
    weighted = fields.Function(Monetary("Weighted", currency='currency',
            digits='currency',
            help="Each deal's value × its stage's probability."),
        'get_figures')
    forecast = fields.Function(Monetary("Forecast", currency='currency',
            digits='currency',
            help="Each deal's value × the share of deals won that were in "
            "its stage, from the same lead source (from 5 closed deals "
            "up; else from any source; else the stage's probability)."),
        'get_figures')
    won = fields.Function(Monetary("Won", currency='currency',
            digits='currency',
            help="Value of the deals won in the month (still won)."),
        'get_figures')
    target = fields.Function(Monetary("Target", currency='currency',
            digits='currency',
            help="The month's target: the owner's when filtered by owner, "
            "the team's by team, else the teams' (or the reps')."),
        'get_figures')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('id', 'ASC')]

    @classmethod
    def table_query(cls):
        "One row per month of the period: its number in it, and its name."
        months = [Select([Literal(i).as_('id'), *no_timestamps(),
                    Literal(month.strftime('%b %Y')).as_('month')])
            for i, month in enumerate(period_months(), 1)]
        if len(months) > 1:
            return Union(*months, all_=True)
        if months:
            return months[0]
        # A period that ends before it starts has no month.
        return Select([Literal(0).as_('id'), *no_timestamps(),
                Literal('').as_('month')], where=Literal(1) == Literal(0))

    @classmethod
    def get_figures(cls, rows, names):
        months = period_months()
        figures = {name: {} for name in names}
        totals = cls.month_figures(months)
        for row in rows:
            month = months[row.id - 1]
            for name in names:
                figures[name][row.id] = totals[name].get(month, (
                        0 if name == 'open_deals' else
                        company_currency() if name == 'currency' else
                        None if name == 'target' else Decimal(0)))
        return figures

    @classmethod
    def month_figures(cls, months):
        "{figure: {month: value}} over the deals the user may read."
        pool = Pool()
        Deal = pool.get('crm.deal')
        from_date, to_date = period_dates()
        start, end = period()
        currency = company_currency()
        base = [('id', 'in', readable_deals()),
            ('currency', '=', currency or -1)]
        figures = {name: {} for name in ['open_deals', 'pipeline',
                'weighted', 'forecast', 'won', 'target', 'currency']}

        def add(name, month, value):
            figures[name][month] = figures[name].get(month, 0) + value
        rates = won_rates()
        for deal in Deal.search(base + [
                    ('stage.kind', '=', 'open'),
                    ('expected_close', '>=', months[0]),
                    ('expected_close', '<=', to_date)]):
            month = month_of(deal.expected_close)
            source = deal.lead.source.id if deal.lead and deal.lead.source \
                else None
            rate = rates.get((deal.stage.id, source), rates.get(
                    (deal.stage.id, None),
                    Decimal(deal.stage.probability or 0) / 100))
            add('open_deals', month, 1)
            add('pipeline', month, deal.value)
            add('weighted', month, deal.value * Decimal(
                    deal.stage.probability or 0) / 100)
            add('forecast', month, deal.value * rate)
        for deal in Deal.search(base + [('stage.kind', '=', 'won'),
                    ('stage_entered_at', '>=', start),
                    ('stage_entered_at', '<', end)]):
            add('won', month_of(deal.stage_entered_at.replace(
                        tzinfo=dt.timezone.utc).astimezone(ZONE).date()),
                deal.value)
        for month, amount in cls.targets(months).items():
            figures['target'][month] = amount
        for name in ['pipeline', 'weighted', 'forecast', 'won']:
            figures[name] = {m: Decimal(v).quantize(Decimal('0.01'))
                for m, v in figures[name].items()}
        figures['currency'] = dict.fromkeys(months, currency)
        return figures

    @classmethod
    def targets(cls, months):
        """{month: amount} of the targets the filters name: the owner's,
        the team's, else the teams' (or, in a month without one, the
        reps')."""
        Target = Pool().get('crm.sales.target')
        context = Transaction().context
        domain = [('company', '=', context.get('company', -1)),
            ('month', 'in', months)]
        if context.get('owner') is not None:
            domain.append(('user', '=', context['owner']))
        elif context.get('team') is not None:
            domain.append(('team', '=', context['team']))
        by_month = {}
        for target in Target.search(domain):
            kind = 'user' if target.user else 'team'
            by_month.setdefault(target.month, {}).setdefault(kind, []).append(
                target.amount)
        return {month: sum(kinds.get('team') or kinds.get('user'))
            for month, kinds in by_month.items()}
