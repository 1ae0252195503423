"""Lead scoring in the database: attribute and behaviour rules, decay with a
half-life, clamping and bands, rescoring only the leads touched, price
keywords in English, Hindi and Hinglish, and the predictive score."""
import datetime as dt
import io
import random
import unittest
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..message import utcnow
from ..scoring import (
    DEFAULT_PRICE_KEYWORDS, asks_price, decayed, keyword_list,
    keyword_pattern)
from .plans import full_scans


def lead(**values):
    Lead = Pool().get('crm.lead')
    record, = Lead.create([{'name': "Asha Rao", **values}])
    return Lead(record.id)


def lines_of(record):
    "{rule name: points} of a lead's breakdown, as stored."
    Line = Pool().get('crm.lead.score_line')
    return {l.rule.name: l.points for l in Line.search([
                ('lead', '=', record.id)])}


def only_rules(*xml_ids):
    "Switch off every default rule but these, so a test sees one at a time."
    pool = Pool()
    Rule = pool.get('crm.scoring.rule')
    ModelData = pool.get('ir.model.data')
    keep = {ModelData.get_id('kraya_crm', x) for x in xml_ids}
    Rule.write([r for r in Rule.search([]) if r.id not in keep],
        {'active': False})


def mark(leads, score):
    """Give leads, by SQL, a score no rule gives and no silence clock: a
    lead rescored loses it."""
    Lead = Pool().get('crm.lead')
    table = Lead.__table__()
    Transaction().connection.cursor().execute(*table.update(
            [table.score, table.silent_check_at], [score, None],
            where=table.id.in_([l.id for l in leads])))


def stored_scores(leads):
    "The scores in the table, past Tryton's cache of the transaction."
    Lead = Pool().get('crm.lead')
    table = Lead.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.id, table.score,
            where=table.id.in_([l.id for l in leads])))
    scores = dict(cursor)
    return [scores[l.id] for l in leads]


def source(code):
    Source = Pool().get('crm.source')
    return Source.get_by_code(code).id


class ScoringTestCase(unittest.TestCase):
    "Explainable lead scoring"

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_attribute_rules_add_their_points_with_a_line_each(self):
        with set_company(create_company()):
            referral = lead(source=source('referral'),
                budget=Decimal('1500000'), city="Mumbai",
                company_name="Rao Traders")
            walk_in = lead(source=source('walk-in'), budget=Decimal('900000'),
                city="Surat")
            self.assertEqual(lines_of(referral), {
                    "Came by referral": 20,
                    "Budget of ₹10,00,000 or more": 15,
                    "In a city we sell in": 10,
                    "Gave a company name": 5})
            self.assertEqual(referral.score, 50)
            self.assertEqual(referral.band, 'warm')
            self.assertEqual(walk_in.score, 0)
            self.assertEqual(walk_in.band, 'cold')
            self.assertEqual(lines_of(walk_in), {})

    @with_transaction()
    def test_writing_a_field_a_rule_reads_rescores_the_lead(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            record = lead(city="Pune")
            self.assertEqual(record.score, 0)
            Lead.write([record], {'budget': Decimal('2500000')})
            self.assertEqual(Lead(record.id).score, 15)
            Lead.write([record], {'budget': Decimal('500000')})
            self.assertEqual(Lead(record.id).score, 0)
            self.assertEqual(lines_of(record), {})

    @with_transaction()
    def test_a_rule_with_a_bad_domain_is_refused(self):
        Rule = Pool().get('crm.scoring.rule')
        with self.assertRaisesRegex(UserError, 'not a domain'):
            Rule.create([{'name': "Bad", 'kind': 'attribute',
                        'domain': '[["no_such_field", "=", 1]]',
                        'points': 5}])

    @with_transaction()
    def test_one_rule_per_event(self):
        Rule = Pool().get('crm.scoring.rule')
        with self.assertRaisesRegex(UserError, 'Only one rule'):
            Rule.create([{'name': "Replied again", 'kind': 'behaviour',
                        'event': 'replied_whatsapp', 'points': 5}])

    @with_transaction()
    def test_behaviour_points_halve_every_half_life(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            only_rules('rule_replied_whatsapp')
            record = lead()
            now = utcnow()
            Lead.record_score_events([
                    (record, 'replied_whatsapp', now - dt.timedelta(days=14))])
            Lead.rescore([record], now=now)
            self.assertEqual(Lead(record.id).score, 13)  # 25 / 2, rounded
            Lead.rescore([record], now=now + dt.timedelta(days=14))
            self.assertEqual(Lead(record.id).score, 6)  # 25 / 4
            Lead.rescore([record], now=now + dt.timedelta(days=200))
            self.assertEqual(Lead(record.id).score, 0)
            self.assertIsNone(Lead(record.id).score_decays_at)

    def test_decay_says_when_the_whole_points_next_drop(self):
        at = dt.datetime(2026, 12, 1)
        points, changes_at = decayed(20, at, 10, at)
        self.assertEqual(points, 20)
        # 20 halves to 19.5 (rounds to 19) after 10 * log2(20 / 19.5) days.
        self.assertAlmostEqual(
            (changes_at - at).total_seconds() / 86400, 0.3653, places=3)
        self.assertEqual(decayed(20, at, 10, changes_at
                + dt.timedelta(seconds=1))[0], 19)
        self.assertEqual(decayed(-10, at, None, at + dt.timedelta(days=99)),
            (-10, None))

    @with_transaction()
    def test_only_the_latest_event_of_a_kind_counts(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            only_rules('rule_replied_whatsapp')
            record = lead()
            now = utcnow()
            Lead.record_score_events([(record, 'replied_whatsapp', now),
                    (record, 'replied_whatsapp', now),
                    (record, 'replied_whatsapp', now)])
            self.assertEqual(Lead(record.id).score, 25)

    @with_transaction()
    def test_score_is_clamped_to_100_and_the_breakdown_adds_up(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            record = lead(source=source('referral'),
                budget=Decimal('9000000'), city="Thane", company_name="X")
            now = utcnow()
            Lead.record_score_events([(record, kind, now) for kind in [
                        'replied_whatsapp', 'asked_price', 'visit_booked',
                        'email_engaged']])
            record = Lead(record.id)
            self.assertEqual(sum(lines_of(record).values()), 115)
            self.assertEqual(record.score, 100)
            self.assertEqual(record.band, 'hot')

    @with_transaction()
    def test_silence_takes_points_until_the_lead_writes_again(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            only_rules('rule_silent', 'rule_referral',
                'rule_replied_whatsapp')
            record = lead(source=source('referral'))
            self.assertEqual(record.score, 20)
            week = utcnow() + dt.timedelta(days=7, minutes=1)
            Lead.score_tick(now=week)
            record = Lead(record.id)
            self.assertEqual(record.score, 10)
            self.assertEqual(lines_of(record)["No reply for 7 days"], -10)
            self.assertIsNone(record.silent_check_at)
            Lead.record_score_events([(record, 'replied_whatsapp', week)])
            record = Lead(record.id)
            self.assertEqual(record.score, 45)
            self.assertNotIn("No reply for 7 days", lines_of(record))
            self.assertEqual(record.silent_check_at,
                week + dt.timedelta(days=7))

    @with_transaction()
    def test_bands_follow_the_thresholds_of_the_settings(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Configuration = pool.get('crm.configuration')
        with set_company(create_company()):
            record = lead(source=source('referral'),
                budget=Decimal('1000000'), city="Mumbai")
            self.assertEqual((record.score, record.band), (45, 'warm'))
            Configuration.write([Configuration(1)],
                {'band_hot_from': 45, 'band_warm_from': 20})
            Lead.rescore([record])
            self.assertEqual(Lead(record.id).band, 'hot')
            Configuration.write([Configuration(1)],
                {'band_hot_from': 90, 'band_warm_from': 46})
            Lead.rescore([record])
            self.assertEqual(Lead(record.id).band, 'cold')

    @with_transaction()
    def test_rescoring_touches_only_the_leads_of_the_event(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            leads = Lead.create([{'name': f"Lead {i}", 'city': "Mumbai"}
                    for i in range(5)])
            # A score no rule gives: rescored, a lead would lose it.
            mark(leads, 77)
            touched = leads[0]
            Lead.record_score_events([(touched, 'asked_price', utcnow())])
            self.assertEqual(stored_scores(leads), [25, 77, 77, 77, 77])

    @with_transaction()
    def test_tick_reads_only_due_leads_through_their_indexes(self):
        Lead = Pool().get('crm.lead')
        for query in [Lead.silent_due_query(utcnow()),
                Lead.decay_due_query(utcnow())]:
            sql, params = tuple(query)
            self.assertEqual(full_scans(sql, params, 'crm_lead'), [], sql)

    @with_transaction()
    def test_tick_rescores_the_leads_whose_points_decayed(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            only_rules('rule_asked_price')
            fading, steady = Lead.create([{'name': "Fading"},
                    {'name': "Steady"}])
            now = utcnow()
            Lead.record_score_events([(fading, 'asked_price', now)])
            fading = Lead(fading.id)
            self.assertEqual(fading.score, 15)
            self.assertIsNotNone(fading.score_decays_at)
            self.assertIsNone(Lead(steady.id).score_decays_at)
            mark([steady], 77)
            Lead.score_tick(now=now + dt.timedelta(days=21))
            self.assertEqual(Lead(fading.id).score, 8)
            self.assertGreater(Lead(fading.id).score_decays_at,
                now + dt.timedelta(days=21))
            self.assertEqual(stored_scores([steady]), [77])

    def test_price_keywords_in_english_hindi_and_hinglish(self):
        pattern = keyword_pattern(keyword_list(DEFAULT_PRICE_KEYWORDS))
        for text in ["kitna rate hai 3BHK?", "Kya rate chal raha hai",
                "2BHK ka daam batao", "इस फ्लैट की कीमत क्या है?",
                "3 BHK कितने का है", "Price list please", "What's the cost?",
                "bhav kya hai"]:
            with self.subTest(text=text):
                self.assertTrue(asks_price(text, pattern))
        for text in ["Separate parking?", "Site visit on Sunday",
                "Accurate location please", "ok"]:
            with self.subTest(text=text):
                self.assertFalse(asks_price(text, pattern))

    @with_transaction()
    def test_inbound_whatsapp_asking_a_price_after_our_message_scores_both(
            self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            only_rules('rule_replied_whatsapp', 'rule_asked_price')
            record = lead(phone='9876543210')
            now = utcnow()
            Message.create([{'lead': record.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'status': 'received',
                        'body': "Hi", 'at': now - dt.timedelta(hours=2)}])
            self.assertEqual(Lead(record.id).score, 0,
                "a first message is no reply")
            Message.create([{'lead': record.id, 'direction': 'outbound',
                        'channel': 'whatsapp', 'status': 'sent',
                        'body': "Namaste!", 'at': now - dt.timedelta(hours=1)},
                    ])
            Message.create([{'lead': record.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'status': 'received',
                        'body': "kitna rate hai 3BHK?", 'at': now}])
            record = Lead(record.id)
            self.assertEqual(record.score, 40)
            self.assertEqual(lines_of(record), {
                    "Replied on WhatsApp": 25, "Asked for a price": 15})
            reasons = [l.reason for l in record.score_lines]
            self.assertTrue(any('kitna rate hai 3BHK?' in r for r in reasons),
                reasons)

    @with_transaction()
    def test_a_deal_entering_a_visit_stage_scores_a_booked_visit(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        Stage = pool.get('crm.stage')
        with set_company(create_company()):
            only_rules('rule_visit_booked')
            record = lead()
            deal, = Lead.convert_to_deals([record])
            self.assertEqual(Lead(record.id).score, 0)
            stage, = Stage.search([('name', '=', "Qualified")])
            stage.counts_as_visit = True
            stage.save()
            Deal.write([deal], {'stage': stage.id})
            self.assertEqual(lines_of(record), {"Booked a visit": 20})

    @with_transaction()
    def test_imported_leads_are_scored_in_the_bulk_path(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            data = ("name,phone,city\nA,9876500001,Mumbai\n"
                "B,9876500002,Surat\n").encode()
            Lead.import_file(io.BytesIO(data), 'leads.csv', source='referral')
            scores = {l.name: (l.score, l.band) for l in Lead.search([])}
            self.assertEqual(scores, {'A': (30, 'cold'), 'B': (20, 'cold')})

    @with_transaction()
    def test_merged_leads_events_count_for_the_kept_lead(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            only_rules('rule_asked_price')
            kept, other = Lead.create([{'name': "Kept"}, {'name': "Other"}])
            Lead.record_score_events([(other, 'asked_price', utcnow())])
            Lead._move_related(kept, [other])
            self.assertEqual(Lead(kept.id).score, 15)
            self.assertEqual(Lead(other.id).score, 0)


def closed_history(count, rng, signal=True):
    """Converted leads with closed deals: referrals and leads answered
    within the hour win far more often (when `signal`)."""
    pool = Pool()
    Lead = pool.get('crm.lead')
    Deal = pool.get('crm.deal')
    Stage = pool.get('crm.stage')
    won, = Stage.search([('kind', '=', 'won')])
    lost, = Stage.search([('kind', '=', 'lost')])
    codes = ['referral', 'whatsapp', 'website', 'walk-in']
    leads = Lead.create([{'name': f"History {i}",
                'source': source(rng.choice(codes)),
                'city': rng.choice(["Mumbai", "Pune"])}
            for i in range(count)])
    table = Lead.__table__()
    cursor = Transaction().connection.cursor()
    outcome = {}
    for record in leads:
        fast = rng.random() < 0.5
        hours = rng.uniform(0.1, 0.9) if fast else rng.uniform(20, 60)
        created = utcnow() - dt.timedelta(days=60)
        cursor.execute(*table.update(
                [table.create_date, table.first_response_at],
                [created, created + dt.timedelta(hours=hours)],
                where=table.id == record.id))
        chance = 0.1 + 0.45 * (record.source.code == 'referral') \
            + 0.35 * fast if signal else 0.4
        outcome[record.id] = rng.random() < chance
    deals = Lead.convert_to_deals(leads)
    Deal.write([d for d in deals if outcome[d.lead.id]], {'stage': won.id},
        [d for d in deals if not outcome[d.lead.id]],
        {'stage': lost.id, 'lost_reason': "Bought elsewhere"})
    return leads


class PredictionTestCase(unittest.TestCase):
    "The predictive score"

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_model_finds_the_signal_in_the_history(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Model = pool.get('crm.scoring.model')
        with set_company(create_company()):
            closed_history(240, random.Random(16))
            Model.retrain()
            model = Model.latest()
            self.assertEqual(model.state, 'trained')
            self.assertEqual(model.n_won + model.n_lost, 240)
            self.assertGreater(model.auc, 0.7)
            weights = dict(zip(*[Model.current()[k]
                        for k in ['features', 'weights']]))
            self.assertGreater(weights['source:referral'], 0.3)
            self.assertLess(weights['response_hours'], -0.3)
            self.assertIn("Source: Referral", model.coefficients_text)
            self.assertEqual(len(model.calibration_text.splitlines()), 10)

            fast_referral, slow_walk_in = Lead.create([
                    {'name': "Fast", 'source': source('referral')},
                    {'name': "Slow", 'source': source('walk-in')}])
            table = Lead.__table__()
            cursor = Transaction().connection.cursor()
            for record, hours in [(fast_referral, 0.2), (slow_walk_in, 40)]:
                cursor.execute(*table.update([table.first_response_at],
                        [record.create_date + dt.timedelta(hours=hours)],
                        where=table.id == record.id))
            fast_referral, slow_walk_in = Lead.browse(
                [fast_referral.id, slow_walk_in.id])
            self.assertGreater(fast_referral.win_probability,
                slow_walk_in.win_probability + 0.3)
            self.assertIn("+ Source: Referral", fast_referral.win_reasons)

    @with_transaction()
    def test_model_refuses_below_the_closed_deals_needed(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Model = pool.get('crm.scoring.model')
        with set_company(create_company()):
            leads = closed_history(12, random.Random(1))
            Model.retrain()
            model = Model.latest()
            self.assertEqual(model.state, 'not_enough')
            self.assertEqual(model.summary,
                "Not enough history: 12 closed deals, needs 30.")
            record = Lead(leads[0].id)
            self.assertIsNone(record.win_probability)
            self.assertEqual(record.win_reasons, model.summary)

