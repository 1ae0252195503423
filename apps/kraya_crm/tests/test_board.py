"""The pipeline board's model: where a card lands in its column, what a
stage asks for before a deal enters it, the forecast's months, and the
board's queries reading through indexes."""
import datetime as dt
import unittest
from decimal import Decimal

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from ..board import Filters, InboxRefusal, same_day_in
from .plans import SelectsRun, full_scans


def stage(name):
    Stage = Pool().get('crm.stage')
    found, = Stage.search([('name', '=', name)])
    return found


def new_deals(*titles, **values):
    Deal = Pool().get('crm.deal')
    return Deal.create([{'title': title, 'value': Decimal(100000),
                **values} for title in titles])


def column_order(stage_):
    "The ids of a stage's column, top first, as the board shows them."
    Board = Pool().get('crm.board')
    data = Board.board('deals', Filters())
    column, = [c for c in data['columns'] if c['id'] == str(stage_.id)]
    return [card['id'] for card in column['cards']]


class BoardTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_new_deals_go_on_top_of_their_column(self):
        with set_company(create_company()):
            first, = new_deals("First")
            second, = new_deals("Second")
            self.assertEqual(column_order(stage("New")),
                [second.id, first.id])

    @with_transaction()
    def test_dropped_card_lands_between_its_neighbours(self):
        Board = Pool().get('crm.board')
        with set_company(create_company()):
            new = stage("New")
            a, b, c = [new_deals(t)[0] for t in "ABC"]
            self.assertEqual(column_order(new), [c.id, b.id, a.id])
            Board.move_deal(a.id, {'stage': new.id, 'after': c.id,
                    'before': b.id})
            self.assertEqual(column_order(new), [c.id, a.id, b.id])
            Board.move_deal(b.id, {'stage': new.id})
            self.assertEqual(column_order(new), [b.id, c.id, a.id])

    @with_transaction()
    def test_room_is_made_when_two_cards_leave_none_between_them(self):
        pool = Pool()
        Board = pool.get('crm.board')
        Deal = pool.get('crm.deal')
        with set_company(create_company()):
            new = stage("New")
            a, b, c, d = [new_deals(t)[0] for t in "ABCD"]
            # Made in one go, cards share a position: the newest first.
            Deal.write([a, b, c, d], {'board_position': -5.0})
            self.assertEqual(column_order(new), [d.id, c.id, b.id, a.id])
            Board.move_deal(a.id, {'stage': new.id, 'after': d.id,
                    'before': c.id})
            self.assertEqual(column_order(new), [d.id, a.id, c.id, b.id])

    @with_transaction()
    def test_lost_stage_asks_for_the_lost_reason(self):
        pool = Pool()
        Board = pool.get('crm.board')
        Deal = pool.get('crm.deal')
        with set_company(create_company()):
            deal, = new_deals("Powai 2 BHK")
            lost = stage("Lost")
            asked = Board.fields_required_in(deal, lost)
            self.assertEqual(list(asked), ['lost_reason'])
            self.assertEqual(asked['lost_reason']['type'], 'text')
            self.assertEqual(Board.fields_required_in(deal, stage("Won")),
                {})
            with self.assertRaises(InboxRefusal) as refusal:
                Board.move_deal(deal.id, {'stage': lost.id})
            self.assertEqual(refusal.exception.code, 'fields_required')
            self.assertEqual(Deal(deal.id).stage, stage("New"))
            Board.move_deal(deal.id, {'stage': lost.id,
                    'fields': {'lost_reason': "Budget too low"}})
            deal = Deal(deal.id)
            self.assertEqual((deal.stage, deal.lost_reason),
                (lost, "Budget too low"))
            self.assertEqual([h.to_stage for h in deal.stage_history],
                [lost, stage("New")])

    def test_forecast_keeps_the_day_of_the_month_or_takes_its_last(self):
        february = dt.date(2027, 2, 1)
        self.assertEqual(same_day_in(february, dt.date(2027, 1, 31)),
            dt.date(2027, 2, 28))
        self.assertEqual(same_day_in(february, dt.date(2027, 1, 12)),
            dt.date(2027, 2, 12))
        self.assertEqual(same_day_in(february, None), dt.date(2027, 2, 28))

    @with_transaction()
    def test_forecast_totals_open_deals_by_month_weighted_by_stage(self):
        Board = Pool().get('crm.board')
        with set_company(create_company()):
            new_deals("January", expected_close=dt.date(2031, 1, 5),
                stage=stage("Proposal Sent").id)
            new_deals("Won in January", expected_close=dt.date(2031, 1, 9),
                stage=stage("Won").id)
            new_deals("Undated", stage=stage("Negotiation").id)
            data = Board.board('forecast', Filters(), start='2031-01')
            columns = {c['id']: c for c in data['columns']}
            self.assertEqual((columns['2031-01']['count'],
                    columns['2031-01']['total'],
                    columns['2031-01']['weighted']), (1, '100000', '60000'))
            self.assertEqual((columns['none']['count'],
                    columns['none']['weighted']), (1, '80000'))
            self.assertEqual(columns['earlier']['count'], 0)

    @with_transaction()
    def test_board_reads_deals_through_indexes(self):
        Board = Pool().get('crm.board')
        with set_company(create_company()):
            new_deals(*[f"Deal {n}" for n in range(30)])
            deal, = new_deals("Live", expected_close=dt.date(2030, 1, 1))
            cursor = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                - dt.timedelta(minutes=1)).isoformat() + 'Z'
            with SelectsRun() as run:
                Board.board('deals', Filters())
                Board.board('forecast', Filters())
                Board.more('deals', str(stage("New").id), Filters(),
                    offset=20)
                Board.changed_since('deals', Filters(), cursor,
                    shown=[deal.id])
            queries = run.on('crm_deal')
            self.assertTrue(queries)
            for query in queries:
                self.assertEqual(full_scans(query, None, 'crm_deal'), [],
                    query)
