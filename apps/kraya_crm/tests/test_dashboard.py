"""The dashboard's figures (dashboard.py) on a small data set whose every
number is worked out by hand below, for two reps and for the manager, and
the monthly targets' rules.

"Now" is fixed: Tuesday 15 December 2026, 12:00 in Mumbai (06:30 UTC).
Today in India began at 14 December 18:30 UTC; the fiscal year is
2026-27 (1 April 2026 to 31 March 2027)."""
import datetime as dt
import unittest
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

NOW = dt.datetime(2026, 12, 15, 6, 30)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def stage(name):
    found, = Pool().get('crm.stage').search([('name', '=', name)])
    return found


def set_columns(Model, records, **values):
    "Write columns the server keeps for itself (create_date, band)."
    table = Model.__table__()
    columns = [getattr(table, name) for name in values]
    Transaction().connection.cursor().execute(*table.update(
            columns, list(values.values()),
            where=table.id.in_([r.id for r in records])))


class Figures:
    "The data set, made once per test."

    def __init__(self, company):
        pool = Pool()
        User = pool.get('res.user')
        ModelData = pool.get('ir.model.data')
        Source = pool.get('crm.source')
        Team = pool.get('crm.team')
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        Task = pool.get('crm.task')
        Target = pool.get('crm.sales.target')
        rep_group = ModelData.get_id('kraya_crm', 'group_crm_rep')
        self.asha, self.ravi = User.create([{'name': name, 'login': login,
                    'groups': [('add', [rep_group])],
                    'companies': [('add', [company.id])],
                    'company': company.id}
                for name, login in [("Asha", 'asha_dash'),
                    ("Ravi", 'ravi_dash')]])
        self.team, = Team.create([{'name': "Mumbai (dashboard)",
                    'members': [('add', [self.asha.id, self.ravi.id])]}])
        web, walk = Source.create([
                {'name': "Web (dashboard)", 'code': 'web_dash'},
                {'name': "Walk-in (dashboard)", 'code': 'walk_dash'}])
        asha = {'owner': self.asha.id, 'team': self.team.id}
        ravi = {'owner': self.ravi.id, 'team': self.team.id}
        l1, l2, l3, l4, l5 = Lead.create([
                dict(asha, name="L1", source=web.id),
                dict(asha, name="L2", source=web.id),
                dict(ravi, name="L3", source=walk.id),
                dict(ravi, name="L4"),
                dict(asha, name="L5", source=web.id),
                ])
        # L1: today 10:00; L2: yesterday 12:00; L3: today 00:30 (the
        # 14th in UTC); L4: yesterday 23:30 (India); L5: 44 days ago.
        for lead, at in [(l1, NOW - 2 * HOUR), (l2, NOW - DAY),
                (l3, dt.datetime(2026, 12, 14, 19, 0)),
                (l4, dt.datetime(2026, 12, 14, 18, 0)),
                (l5, dt.datetime(2026, 11, 1, 6, 30))]:
            set_columns(Lead, [lead], create_date=at, sla_started_at=at,
                sla_due_at=at + HOUR)
        # Hot and unanswered: L1 (Asha's), L4 (Ravi's); L5 hot, answered.
        set_columns(Lead, [l1, l4, l5], band='hot')
        # Answered: L2 in 10 min (on time), L3 in 30 min past a due set
        # before the answer (late), L5 more than 30 days ago (out of the
        # median's window).
        for lead, seconds, late in [(l2, 600, False), (l3, 1800, True),
                (l5, 60, False)]:
            at = Lead(lead.id).sla_started_at
            set_columns(Lead, [lead], first_response_seconds=seconds,
                first_response_at=at + dt.timedelta(seconds=seconds),
                sla_due_at=at + dt.timedelta(seconds=10 if late else 3600))
        Task.create([
                dict(name="T1 today", owner=self.asha.id, due=NOW + 3 * HOUR),
                dict(name="T2 late", owner=self.asha.id, due=NOW - 2 * DAY),
                dict(name="T3 late today", owner=self.asha.id,
                    due=NOW - HOUR),
                dict(name="T4 tomorrow", owner=self.ravi.id, due=NOW + DAY),
                dict(name="T5 done", owner=self.ravi.id, due=NOW + HOUR,
                    state='done'),
                dict(name="T6 tonight 23:00", owner=self.ravi.id,
                    due=NOW + 11 * HOUR),
                ])
        won, lost = stage("Won"), stage("Lost")
        for values, stage_, entered in [
                (dict(asha, title="D1", value=Decimal(100000)), won,
                    dt.datetime(2026, 12, 2, 6, 30)),
                (dict(asha, title="D2", value=Decimal(50000)), won,
                    dt.datetime(2026, 10, 10, 6, 30)),
                (dict(ravi, title="D3", value=Decimal(250000)), won,
                    dt.datetime(2026, 12, 10, 6, 30)),
                # Won last fiscal year: on no chart of this one.
                (dict(ravi, title="D4", value=Decimal(80000)), won,
                    dt.datetime(2026, 3, 20, 6, 30)),
                (dict(asha, title="D5", value=Decimal(200000)),
                    stage("Proposal Sent"), NOW - DAY),
                (dict(ravi, title="D6", value=Decimal(300000)),
                    stage("New"), NOW - DAY),
                (dict(asha, title="D7", value=Decimal(40000),
                        lost_reason="Budget"), lost, NOW - DAY),
                ]:
            Deal.create([dict(values, stage=stage_.id,
                        stage_entered_at=entered)])
        december = dt.date(2026, 12, 1)
        Target.create([
                {'user': self.asha.id, 'month': december,
                    'amount': Decimal(200000)},
                {'user': self.ravi.id, 'month': dt.date(2026, 12, 20),
                    'amount': Decimal(500000)},
                {'user': self.asha.id, 'month': dt.date(2026, 11, 1),
                    'amount': Decimal(999999)},
                ])

    def as_user(self, user):
        return Transaction().set_user(user.id)


def figures():
    with Transaction().set_context(_check_access=True):
        return Pool().get('crm.dashboard').figures(now=NOW)


def tiles(data):
    return {t['key']: (t['value'], t['text']) for t in data['tiles']}


class DashboardTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_rep_sees_today_numbers_of_their_own_records(self):
        company = create_company()
        with set_company(company):
            data = Figures(company)
            with data.as_user(data.asha):
                asha = figures()
        self.assertEqual(asha['scope'], 'mine')
        self.assertEqual(tiles(asha), {
                'new_leads': (1, '1'),  # L1 (L2 was yesterday)
                'hot_waiting': (1, '1'),  # L1
                # L2 answered in 10 min; L1 still waiting.
                'first_response': (600, '10 min'),
                'tasks_today': (1, '1'),  # T1 (T3 is late already)
                'tasks_overdue': (2, '2'),  # T2, T3
                'won_month': (1, '1'),  # D1
                'pipeline': ('200000', '₹2,00,000'),  # D5
                })
        pipeline = asha['tiles'][-1]
        # D5 in Proposal Sent (60 %).
        self.assertEqual(pipeline['weighted_text'], '₹1,20,000')
        self.assertEqual(asha['target'], {'kind': 'rep',
                'won': '100000', 'won_text': '₹1,00,000',
                'amount': '200000', 'amount_text': '₹2,00,000',
                'percent': 50})
        self.assertEqual([(s['label'], s['count'])
                for s in asha['charts']['sources']],
            [("Web (dashboard)", 2)])  # L1, L2 (L5 came in November)
        won = {m['label']: m['value_text']
            for m in asha['charts']['won_by_month'] if m['count']}
        self.assertEqual(won, {'Oct': '₹50,000', 'Dec': '₹1,00,000'})

    @with_transaction()
    def test_other_rep_sees_theirs_with_the_indian_day_boundary(self):
        company = create_company()
        with set_company(company):
            data = Figures(company)
            with data.as_user(data.ravi):
                ravi = figures()
        self.assertEqual(tiles(ravi), {
                # L3 came at 00:30 today in India (still the 14th in UTC);
                # L4 at 23:30 yesterday.
                'new_leads': (1, '1'),
                'hot_waiting': (1, '1'),  # L4
                'first_response': (1800, '30 min'),  # L3
                'tasks_today': (1, '1'),  # T6 at 23:00 tonight
                'tasks_overdue': (0, '0'),
                'won_month': (1, '1'),  # D3
                'pipeline': ('300000', '₹3,00,000'),  # D6
                })
        self.assertEqual(ravi['tiles'][-1]['weighted_text'], '₹30,000')
        self.assertEqual(ravi['target']['percent'], 50)  # 2.5 of 5 lakh
        self.assertEqual(sorted((s['label'], s['count'])
                for s in ravi['charts']['sources']),
            [("No source", 1), ("Walk-in (dashboard)", 1)])

    @with_transaction()
    def test_manager_sees_everyone_against_the_team_target(self):
        Target = Pool().get('crm.sales.target')
        company = create_company()
        with set_company(company):
            data = Figures(company)
            manager = figures()
            self.assertEqual(manager['scope'], 'all')
            self.assertEqual(tiles(manager), {
                    'new_leads': (2, '2'),  # L1, L3
                    'hot_waiting': (2, '2'),  # L1, L4
                    # L2 600 s and L3 1800 s: the median 1200 s.
                    'first_response': (1200, '20 min'),
                    'tasks_today': (2, '2'),  # T1, T6
                    'tasks_overdue': (2, '2'),  # T2, T3
                    'won_month': (2, '2'),  # D1, D3
                    'pipeline': ('500000', '₹5,00,000'),  # D5, D6
                    })
            first_response = manager['tiles'][2]
            self.assertEqual(first_response['detail'],
                "2 leads answered in 30 days, 50% within target")
            # 1,20,000 + 30,000
            self.assertEqual(manager['tiles'][-1]['weighted_text'],
                '₹1,50,000')
            # No team target: the reps' own, 2 + 5 lakh.
            self.assertEqual((manager['target']['kind'],
                    manager['target']['amount_text'],
                    manager['target']['percent']), ('reps', '₹7,00,000', 50))
            # Open deals by stage; won and lost this month: D1, D3 and D7
            # (D2 was won in October, D4 last year).
            self.assertEqual({f['label']: f['count']
                    for f in manager['charts']['funnel'] if f['count']},
                {"New": 1, "Proposal Sent": 1, "Won": 2, "Lost": 1})
            self.assertEqual({m['month']: m['value']
                    for m in manager['charts']['won_by_month']
                    if m['count']},
                {'2026-10': '50000', '2026-12': '350000'})
            self.assertEqual([m['label']
                    for m in manager['charts']['won_by_month']],
                ['Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov',
                    'Dec', 'Jan', 'Feb', 'Mar'])

            Target.create([{'team': data.team.id,
                        'month': dt.date(2026, 12, 1),
                        'amount': Decimal(1000000)}])
            target = figures()['target']
            self.assertEqual((target['kind'], target['amount_text'],
                    target['percent']), ('team', '₹10,00,000', 35))

    @with_transaction()
    def test_numbers_link_to_the_desk_list_behind_them(self):
        company = create_company()
        with set_company(company):
            data = Figures(company)
            with data.as_user(data.asha):
                urls = {t['key']: t['url'] for t in figures()['tiles']}
        database = Transaction().database.name
        self.assertTrue(urls['new_leads'].startswith(
                f'/#{database}/model/crm.lead;domain='))
        self.assertTrue(urls['tasks_overdue'].startswith(
                f'/#{database}/model/crm.task;domain='))
        self.assertIsNone(urls['first_response'])

    @with_transaction()
    def test_target_is_one_per_month_for_a_rep_or_a_team(self):
        pool = Pool()
        Target = pool.get('crm.sales.target')
        company = create_company()
        with set_company(company):
            data = Figures(company)
            target, = Target.search([('user', '=', data.ravi.id),
                    ('month', '=', dt.date(2026, 12, 1))])
            # Any day of the month is kept as its first.
            self.assertEqual(target.month, dt.date(2026, 12, 1))
            with self.assertRaises(UserError):
                Target.create([{'user': data.ravi.id,
                            'month': dt.date(2026, 12, 31),
                            'amount': Decimal(1)}])
            with self.assertRaises(UserError):
                Target.create([{'user': data.ravi.id, 'team': data.team.id,
                            'month': dt.date(2027, 1, 1),
                            'amount': Decimal(1)}])
            with self.assertRaises(UserError):
                Target.create([{'month': dt.date(2027, 1, 1),
                            'amount': Decimal(1)}])

    @with_transaction()
    def test_rep_reads_only_their_own_targets(self):
        Target = Pool().get('crm.sales.target')
        company = create_company()
        with set_company(company):
            data = Figures(company)
            with data.as_user(data.asha), \
                    Transaction().set_context(_check_access=True):
                amounts = sorted(t.amount for t in Target.search([]))
        self.assertEqual(amounts, [Decimal(200000), Decimal(999999)])
