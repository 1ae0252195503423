"""The desk's reports (reporting.py) over a small data set whose every
figure is worked out by hand below: five deals moved through the stages
at known times, leads of two sources and two reps, tasks, lost reasons."""
import datetime as dt
import unittest
from decimal import Decimal

from trytond.model.exceptions import SQLConstraintError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..fiscal_year import year_start
from ..message import utcnow
from ..reporting import ZONE
from .test_sequence import TEXT, make_sequence, run, whatsapp_lead

HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
# The 11th of this fiscal year's April, 10:00 in Mumbai.
FY = year_start(dt.date.today())
D0 = dt.datetime(FY.year, 4, 11, 4, 30)
FY_END = FY.replace(year=FY.year + 1) - dt.timedelta(days=1)


def stage(name):
    Stage = Pool().get('crm.stage')
    found, = Stage.search([('name', '=', name)])
    return found


def set_create_date(Model, records, when):
    "As if the records had been made then (create_date is the server's)."
    table = Model.__table__()
    Transaction().connection.cursor().execute(*table.update(
            [table.create_date], [when],
            where=table.id.in_([r.id for r in records])))


def move(deal, *steps):
    """Move the deal through steps of (stage name, time since D0), and set
    its history as if it had happened then: entered New at D0."""
    pool = Pool()
    Deal = pool.get('crm.deal')
    History = pool.get('crm.deal.stage_history')
    for name, _ in steps:
        Deal.write([deal], {'stage': stage(name).id})
    rows = History.search([('deal', '=', deal.id)], order=[('id', 'ASC')])
    times = [D0] + [D0 + after for _, after in steps]
    assert len(rows) == len(times)
    to_write = []
    for row, at, before in zip(rows, times, [None] + times):
        to_write.extend(([row], {'changed_at': at,
                    'time_in_previous': at - before if before else None}))
    History.write(*to_write)


class Figures:
    "The data set, made once per test (each test is its own transaction)."

    def __init__(self):
        pool = Pool()
        User = pool.get('res.user')
        Source = pool.get('crm.source')
        Team = pool.get('crm.team')
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        Task = pool.get('crm.task')
        self.asha, self.ravi = User.create([
                {'name': "Asha", 'login': 'asha_report'},
                {'name': "Ravi", 'login': 'ravi_report'}])
        self.web, self.walk = Source.create([
                {'name': "Web (report)", 'code': 'web_report'},
                {'name': "Walk-in (report)", 'code': 'walk_report'}])
        self.team_asha, self.team_ravi = Team.create([
                {'name': "Asha's team", 'members': [('add', [self.asha.id])]},
                {'name': "Ravi's team", 'members': [('add', [self.ravi.id])]},
                ])
        asha = {'owner': self.asha.id, 'team': self.team_asha.id}
        ravi = {'owner': self.ravi.id, 'team': self.team_ravi.id}
        l1, l2, l3, l4, l5 = Lead.create([
                dict(asha, name="L1", source=self.web.id),
                dict(asha, name="L2", source=self.web.id),
                dict(ravi, name="L3", source=self.web.id),
                dict(ravi, name="L4", source=self.walk.id),
                dict(asha, name="L5", source=self.walk.id),
                ])
        set_create_date(Lead, [l1, l2, l3, l4], D0)
        # Last fiscal year: in no report of this one.
        set_create_date(Lead, [l5], D0 - 400 * DAY)
        Lead.write([l1, l3, l4], {'status': 'converted'})
        # First responses, in working seconds: Asha 10 min (on time) and
        # 3 h (late, the target was 1 h), Ravi 20 min; L4 never answered.
        for lead, seconds in [(l1, 600), (l2, 3 * 3600), (l3, 1200),
                (l4, None), (l5, 60)]:
            Lead.write([lead], {'sla_started_at': D0, 'sla_due_at': D0 + HOUR,
                    'first_response_seconds': seconds,
                    'first_response_at': (D0 + dt.timedelta(seconds=seconds))
                    if seconds is not None else None})
        self.d1, self.d2, self.d3, self.d4, self.d5 = Deal.create([
                dict(asha, title="D1", lead=l1.id, value=Decimal('100000')),
                dict(ravi, title="D2", lead=l3.id,
                    value=Decimal('250000.50')),
                dict(ravi, title="D3", lead=l4.id, value=Decimal('50000')),
                dict(asha, title="D4", value=Decimal('75000')),
                dict(asha, title="D5", lead=l2.id, value=Decimal('30000')),
                ])
        move(self.d1, ("Contacted", 2 * HOUR), ("Qualified", DAY + 2 * HOUR),
            ("Won", 3 * DAY + 2 * HOUR))
        Deal.write([self.d2, self.d3, self.d5], {'lost_reason': "Budget"})
        move(self.d2, ("Contacted", 4 * HOUR), ("Lost", DAY + 4 * HOUR))
        move(self.d3, ("Qualified", 6 * HOUR), ("Lost", DAY + 6 * HOUR))
        move(self.d5, ("Contacted", 8 * HOUR), ("Lost", 2 * DAY + 8 * HOUR))
        # Tasks done: two of Asha's in the year, one before it, one open;
        # one of Ravi's.
        tasks = Task.create([
                {'name': "Call", 'owner': self.asha.id, 'lead': l1.id},
                {'name': "Visit", 'owner': self.asha.id, 'deal': self.d1.id},
                {'name': "Old call", 'owner': self.asha.id, 'lead': l1.id},
                {'name': "Open call", 'owner': self.asha.id, 'lead': l2.id},
                {'name': "Call", 'owner': self.ravi.id, 'lead': l3.id},
                ])
        for task, done_at in zip(tasks, [D0, D0 + DAY, D0 - 400 * DAY,
                    None, D0 + HOUR]):
            if done_at:
                Task.write([task], {'state': 'done', 'done_at': done_at})


def report(model, **context):
    "The report's rows, read as the desk reads them, with the filters."
    Report = Pool().get(model)
    with Transaction().set_context(**context):
        return Report.search([])


def by(rows, key):
    return {getattr(row, key).name: row for row in rows}


class ReportingTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def funnel(self, **context):
        return {row.stage.name: (row.reached, row.next_rate, row.won_rate,
                row.drop_rate, row.time_in_stage)
            for row in report('crm.reporting.funnel', **context)}

    @with_transaction()
    def test_funnel_counts_each_stage_its_conversions_and_time_in_it(self):
        with set_company(create_company()):
            Figures()
            rows = report('crm.reporting.funnel')
            self.assertEqual([r.stage.name for r in rows], ["New",
                    "Contacted", "Qualified", "Proposal Sent", "Negotiation",
                    "Won", "Lost"])
            self.assertEqual(self.funnel(), {
                    # 5 in; D1, D2, D3 (skipped Contacted), D5 moved on;
                    # D1 won; none lost from New; 2, 4, 6 and 8 h in it.
                    "New": (5, 80.0, 20.0, 0.0, 5 * HOUR),
                    # D1, D2, D5; D1 on; D2 and D5 lost here; 1, 1, 2 days.
                    "Contacted": (3, 33.3, 33.3, 66.7, 32 * HOUR),
                    # D1, D3; D1 won; D3 lost here; 2 days and 1.
                    "Qualified": (2, 50.0, 50.0, 50.0, 36 * HOUR),
                    "Proposal Sent": (0, None, None, None, None),
                    "Negotiation": (0, None, None, None, None),
                    "Won": (1, None, None, 0.0, None),
                    "Lost": (3, None, None, 0.0, None),
                    })

    @with_transaction()
    def test_funnel_follows_the_owner_source_team_and_period_filters(self):
        with set_company(create_company()):
            data = Figures()
            ravi = self.funnel(owner=data.ravi.id)
            self.assertEqual(ravi["New"], (2, 100.0, 0.0, 0.0, 5 * HOUR))
            self.assertEqual(ravi["Contacted"], (1, 0.0, 0.0, 100.0, DAY))
            self.assertEqual(self.funnel(team=data.team_ravi.id), ravi)
            walk_in = self.funnel(source=data.walk.id)
            self.assertEqual(walk_in["New"], (1, 100.0, 0.0, 0.0, 6 * HOUR))
            self.assertEqual(walk_in["Contacted"][0], 0)
            # A period that ends the day before D0 (in Mumbai) sees nothing;
            # one that starts on D0's day sees it all.
            before = self.funnel(from_date=FY, to_date=D0.date() - DAY)
            self.assertEqual({k: v[0] for k, v in before.items()},
                dict.fromkeys(before, 0))
            self.assertEqual(self.funnel(from_date=D0.date(), to_date=FY_END),
                self.funnel())

    @with_transaction()
    def test_sources_count_the_period_leads_conversions_and_won_value(self):
        with set_company(create_company()):
            data = Figures()
            rows = by(report('crm.reporting.source'), 'source')
            figures = {name: (r.leads, r.converted_rate, r.won_deals,
                    r.won_value) for name, r in rows.items()}
            # Without dates, this fiscal year, as the filters' defaults:
            # L5 came last year, walk-in has L4 only.
            Context = Pool().get('crm.reporting.context')
            self.assertEqual((Context.default_from_date(),
                    Context.default_to_date()), (FY, FY_END))
            self.assertEqual(figures, {
                    "Web (report)": (3, 66.7, 1, Decimal('100000.00')),
                    "Walk-in (report)": (1, 100.0, 0, Decimal('0.00')),
                    })
            self.assertIsInstance(rows["Web (report)"].won_value, Decimal)
            ravi = by(report('crm.reporting.source', owner=data.ravi.id),
                'source')
            self.assertEqual({n: (r.leads, r.won_deals)
                    for n, r in ravi.items()},
                {"Web (report)": (1, 0), "Walk-in (report)": (1, 0)})
            self.assertEqual(list(by(report('crm.reporting.source',
                            source=data.walk.id), 'source')),
                ["Walk-in (report)"])
            self.assertEqual(report('crm.reporting.source',
                    from_date=FY, to_date=D0.date() - DAY), [])

    @with_transaction()
    def test_sources_show_their_cost_per_lead_and_per_deal_won(self):
        pool = Pool()
        Source = pool.get('crm.source')
        Cost = pool.get('crm.source.cost')
        with set_company(create_company()):
            data = Figures()
            portal, = Source.create([{'name': "Portal", 'code': 'portal'}])
            april = D0.date()  # kept as 1 April
            Cost.create([
                    {'source': data.web.id, 'month': april,
                        'amount': Decimal('30000')},
                    # March, last fiscal year: not this year's cost.
                    {'source': data.web.id, 'month': FY - DAY,
                        'amount': Decimal('99999')},
                    {'source': data.walk.id, 'month': april,
                        'amount': Decimal('5000')},
                    {'source': portal.id, 'month': FY + 40 * DAY,
                        'amount': Decimal('10000')},
                    ])
            self.assertEqual(Cost.search([('amount', '=', 30000)])[0].month,
                FY)
            rows = by(report('crm.reporting.source'), 'source')
            self.assertEqual({name: (r.leads, r.cost, r.cost_per_lead,
                        r.cost_per_won) for name, r in rows.items()}, {
                    "Web (report)": (3, Decimal('30000.00'),
                        Decimal('10000.00'), Decimal('30000.00')),
                    "Walk-in (report)": (1, Decimal('5000.00'),
                        Decimal('5000.00'), None),
                    # Paid for, and not one lead: it shows.
                    "Portal": (0, Decimal('10000.00'), None, None),
                    })
            walk = by(report('crm.reporting.source', source=data.walk.id),
                'source')
            self.assertEqual(list(walk), ["Walk-in (report)"])
            # One cost a source and month: a second April is refused.
            with self.assertRaises(SQLConstraintError):
                Cost.create([{'source': data.web.id,
                            'month': april + 10 * DAY,
                            'amount': Decimal('1')}])

    @with_transaction()
    def test_reps_show_leads_first_response_tasks_and_deals_won(self):
        with set_company(create_company()):
            data = Figures()
            rows = by(report('crm.reporting.rep'), 'user')
            figures = {name: (r.leads, r.median_first_response, r.within_sla,
                    r.tasks_done, r.won_deals, r.won_value)
                for name, r in rows.items()}
            self.assertEqual(figures, {
                    # Median of 10 min and 3 h; one of two on time.
                    "Asha": (2, dt.timedelta(seconds=5700), 50.0, 2, 1,
                        Decimal('100000.00')),
                    # L4 is not answered: the median is of L3 alone.
                    "Ravi": (2, dt.timedelta(minutes=20), 100.0, 1, 0,
                        Decimal('0.00')),
                    })
            self.assertEqual(list(by(report('crm.reporting.rep',
                            owner=data.asha.id), 'user')), ["Asha"])
            self.assertEqual(list(by(report('crm.reporting.rep',
                            team=data.team_ravi.id), 'user')), ["Ravi"])
            # D1 was won on D0 + 3 days: a period ending before has no win,
            # and only the task done on D0.
            early = by(report('crm.reporting.rep', from_date=D0.date(),
                    to_date=D0.date()), 'user')
            self.assertEqual((early["Asha"].won_deals,
                    early["Asha"].tasks_done), (0, 1))

    @with_transaction()
    def test_lost_reasons_group_by_reason_stage_before_and_source(self):
        with set_company(create_company()):
            data = Figures()
            rows = report('crm.reporting.lost_reason')
            self.assertEqual(sorted((r.reason, r.from_stage.name,
                        r.source.name, r.deals, r.value) for r in rows), [
                    ("Budget", "Contacted", "Web (report)", 2,
                        Decimal('280000.50')),
                    ("Budget", "Qualified", "Walk-in (report)", 1,
                        Decimal('50000.00')),
                    ])
            asha = report('crm.reporting.lost_reason', owner=data.asha.id)
            self.assertEqual([(r.from_stage.name, r.deals, r.value)
                    for r in asha], [("Contacted", 1, Decimal('30000.00'))])
            # D2 and D5 were lost on D0 + 1 and + 2 days, D3 on D0 + 1.
            self.assertEqual(report('crm.reporting.lost_reason',
                    from_date=D0.date() + 2 * DAY, to_date=FY_END)[0].deals,
                1)

    @with_transaction()
    def test_report_exports_are_inert_in_a_spreadsheet(self):
        Deal = Pool().get('crm.deal')
        Lost = Pool().get('crm.reporting.lost_reason')
        with set_company(create_company()):
            data = Figures()
            Deal.write([data.d3], {'lost_reason': '=HYPERLINK("x")'})
            rows = Lost.export_data(Lost.search([('deals', '=', 1)]),
                ['reason', 'deals'])
            self.assertEqual(rows, [["'=HYPERLINK(\"x\")", 1]])

    @with_transaction()
    def test_sequences_count_replies_and_opt_outs_after_each_step(self):
        """Four leads in a three-step sequence: Asha replies after step 1,
        Ravi opts out after step 2, Meena gets all three, Kiran (no
        WhatsApp opt-in) gets none; a lead of another owner's filter."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        Enrollment = pool.get('crm.enrollment')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            data = Figures()
            sequence = make_sequence([TEXT] * 3)
            asha, ravi, meena = [whatsapp_lead(name, owner=data.asha.id,
                    phone=phone) for name, phone in [
                    ("Asha", '9876500001'), ("Ravi", '9876500002'),
                    ("Meena", '9876500003')]]
            kiran, = Lead.create([{'name': "Kiran", 'phone': '9876500004',
                        'owner': data.ravi.id}])
            Enrollment.enrol(sequence,
                [(lead, None) for lead in [asha, ravi, meena, kiran]])

            def step_goes_out():
                run()
                Message.write(Message.search([('status', '=', 'queued')]),
                    {'status': 'sent'})
            step_goes_out()
            Lead.record_inbound([(asha, utcnow(), True)])
            step_goes_out()
            Lead.opt_out([ravi], 'whatsapp', "Asked to stop")
            step_goes_out()

            steps = [(r.step.name, r.reached, r.replied, r.reply_rate,
                    r.opted_out, r.opt_out_rate)
                for r in report('crm.reporting.sequence_step')]
            self.assertEqual(steps, [
                    ("Step 1", 3, 1, 33.3, 0, 0.0),
                    ("Step 2", 2, 0, 0.0, 1, 50.0),
                    ("Step 3", 1, 0, 0.0, 0, 0.0)])
            row, = report('crm.reporting.sequence')
            self.assertEqual((row.sequence, row.enrolled, row.replied,
                    row.reply_rate, row.opted_out, row.opt_out_rate),
                (sequence, 4, 1, 25.0, 1, 25.0))
            # Kiran is Ravi's: Asha's leads alone.
            row, = report('crm.reporting.sequence', owner=data.asha.id)
            self.assertEqual((row.enrolled, row.reply_rate), (3, 33.3))
            self.assertEqual(report('crm.reporting.sequence',
                    from_date=FY_END, to_date=FY_END), [])

    @with_transaction()
    def test_forecast_weights_open_deals_by_stage_and_by_history(self):
        """Five closed deals went through New, two of them won: an open
        deal in New is forecast at 40 %; Qualified has two closed deals
        only, so its stage's probability stands in."""
        pool = Pool()
        Deal = pool.get('crm.deal')
        Target = pool.get('crm.sales.target')
        with set_company(create_company()):
            data = Figures()
            d6, = Deal.create([{'title': "D6", 'owner': data.asha.id,
                        'value': Decimal('20000')}])
            move(d6, ("Won", DAY))
            may, june = FY.replace(month=5), FY.replace(month=6)
            f1, f2 = Deal.create([
                    {'title': "F1", 'owner': data.asha.id,
                        'lead': data.d1.lead.id, 'value': Decimal('200000'),
                        'expected_close': may + 9 * DAY},
                    {'title': "F2", 'owner': data.ravi.id,
                        'value': Decimal('100000'),
                        'expected_close': june + 20 * DAY},
                    ])
            Deal.write([f2], {'stage': stage("Qualified").id})
            Target.create([
                    {'team': data.team_asha.id, 'month': may,
                        'amount': Decimal('500000')},
                    {'user': data.asha.id, 'month': may,
                        'amount': Decimal('300000')},
                    ])
            rows = report('crm.reporting.forecast')
            self.assertEqual(len(rows), 12)
            self.assertEqual(rows[0].month, FY.strftime('%b %Y'))
            by_month = {r.month: r for r in rows}
            new_p = Decimal(stage("New").probability) / 100
            qualified_p = Decimal(stage("Qualified").probability) / 100
            self.assertEqual(
                [(r.open_deals, r.pipeline, r.weighted, r.forecast, r.target)
                    for r in (by_month[may.strftime('%b %Y')],
                        by_month[june.strftime('%b %Y')])], [
                    (1, Decimal('200000.00'), 200000 * new_p,
                        Decimal('80000.00'), Decimal('500000.00')),
                    (1, Decimal('100000.00'), 100000 * qualified_p,
                        100000 * qualified_p, None)])
            # Won when they entered Won: D1 and D6, this month (still won).
            this_month = dt.datetime.now(ZONE).strftime('%b %Y')
            self.assertEqual(by_month[this_month].won, Decimal('120000.00'))
            self.assertEqual(sum(r.won for r in rows), Decimal('120000.00'))
            asha = {r.month: r for r in report('crm.reporting.forecast',
                    owner=data.asha.id)}
            self.assertEqual((asha[may.strftime('%b %Y')].target,
                    asha[june.strftime('%b %Y')].open_deals),
                (Decimal('300000.00'), 0))
            self.assertEqual(len(report('crm.reporting.forecast',
                        from_date=may, to_date=may + DAY)), 1)
