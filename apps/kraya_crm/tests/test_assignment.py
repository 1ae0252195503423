"""Assignment rules and the first-response SLA in the database."""
import datetime as dt
import json
import unittest

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..message import utcnow
from .plans import full_scans


def make_team(*logins):
    pool = Pool()
    User = pool.get('res.user')
    Team = pool.get('crm.team')
    users = User.create([{'login': l, 'name': l.title()} for l in logins])
    team, = Team.create([{'name': "Mumbai Sales",
                'members': [('add', [u.id for u in users])]}])
    return team, users


def make_rule(team, **values):
    Rule = Pool().get('crm.assignment.rule')
    rule, = Rule.create([{'name': "Rule", 'team': team.id, **values}])
    return rule


def new_leads(count=1, **values):
    Lead = Pool().get('crm.lead')
    return Lead.create([{'name': f"Lead {i}", 'owner': None, **values}
            for i in range(count)])


def always_open():
    "The default calendar, open every day all day."
    Calendar = Pool().get('crm.business_calendar')
    calendar = Calendar.get_default()
    calendar.weekdays = [str(d) for d in range(7)]
    calendar.opens_at, calendar.closes_at = dt.time(0), dt.time(23, 59, 59)
    calendar.holidays = []
    calendar.save()
    return calendar


def always_closed_now():
    "The default calendar, closed now and for the next days."
    Calendar = Pool().get('crm.business_calendar')
    calendar = Calendar.get_default()
    today = calendar.clock.local(utcnow()).date()
    Holiday = Pool().get('crm.business_calendar.holiday')
    Holiday.create([{'calendar': calendar.id, 'name': "Closed",
                'date': today + dt.timedelta(days=d)} for d in range(3)])
    return Calendar(calendar.id)


class AssignmentTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_round_robin_goes_round_the_team_and_keeps_its_place(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            always_open()
            team, users = make_team('asha', 'ravi', 'meena')
            rule = make_rule(team, method='round_robin')
            leads = new_leads(4)
            Lead.assign(leads)
            self.assertEqual([Lead(l.id).owner for l in leads],
                [users[0], users[1], users[2], users[0]])
            self.assertEqual(rule.__class__(rule.id).last_user, users[0])
            lead, = new_leads()
            Lead.assign([lead])
            self.assertEqual(Lead(lead.id).owner, users[1])

    @with_transaction()
    def test_fewest_open_leads_goes_to_the_least_loaded(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            always_open()
            team, (asha, ravi) = make_team('asha', 'ravi')
            new_leads(2, owner=asha.id)
            new_leads(3, owner=ravi.id, status='unqualified')
            make_rule(team, method='fewest_open')
            leads = new_leads(3)
            Lead.assign(leads)
            self.assertEqual([Lead(l.id).owner for l in leads],
                [ravi, ravi, asha])

    @with_transaction()
    def test_fixed_user_rule_by_source_and_others_fall_through(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Source = pool.get('crm.source')
        with set_company(create_company()):
            always_open()
            team, (asha, ravi) = make_team('asha', 'ravi')
            referral, = Source.search([('code', '=', 'referral')])
            make_rule(team, name="Referrals", sequence=1, method='fixed',
                user=ravi.id, sources=[('add', [referral.id])])
            make_rule(team, name="Everyone", sequence=2, method='fixed',
                user=asha.id)
            referred, = new_leads(source=referral.id)
            other, = new_leads()
            Lead.assign([referred, other])
            self.assertEqual(Lead(referred.id).owner, ravi)
            self.assertEqual(Lead(referred.id).assignment_rule.name,
                "Referrals")
            self.assertEqual(Lead(other.id).owner, asha)

    @with_transaction()
    def test_territory_by_state_and_by_city(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Subdivision = pool.get('country.subdivision')
        Country = pool.get('country.country')
        with set_company(create_company()):
            always_open()
            india, = Country.create([{'name': "India", 'code': 'IN'}])
            gujarat, = Subdivision.create([{'name': "Gujarat",
                        'code': 'IN-GJ', 'type': 'state',
                        'country': india.id}])
            team, (asha, ravi, meena) = make_team('asha', 'ravi', 'meena')
            make_rule(team, sequence=1, method='fixed', user=asha.id,
                subdivisions=[('add', [gujarat.id])])
            make_rule(team, sequence=2, method='fixed', user=ravi.id,
                cities="Pune, Pimpri")
            make_rule(team, sequence=3, method='fixed', user=meena.id)
            surat, = new_leads(subdivision=gujarat.id, city="Surat")
            pune, = new_leads(city=" pune ")
            delhi, = new_leads(city="Delhi")
            Lead.assign([surat, pune, delhi])
            self.assertEqual([Lead(l.id).owner for l in [surat, pune, delhi]],
                [asha, ravi, meena])

    @with_transaction()
    def test_language_and_domain_conditions(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            always_open()
            team, (asha, ravi, meena) = make_team('asha', 'ravi', 'meena')
            make_rule(team, sequence=1, method='fixed', user=asha.id,
                languages=['mr', 'hi'])
            make_rule(team, sequence=2, method='fixed', user=ravi.id,
                domain=json.dumps([['campaign', '=', "Powai Launch"]]))
            make_rule(team, sequence=3, method='fixed', user=meena.id)
            marathi, = new_leads(language='mr')
            powai, = new_leads(language='ta', campaign="Powai Launch")
            tamil, = new_leads(language='ta')
            Lead.assign([marathi, powai, tamil])
            self.assertEqual(
                [Lead(l.id).owner for l in [marathi, powai, tamil]],
                [asha, ravi, meena])

    @with_transaction()
    def test_user_away_gets_no_lead(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        User = pool.get('res.user')
        with set_company(create_company()):
            always_open()
            team, (asha, ravi) = make_team('asha', 'ravi')
            User.write([asha], {'crm_away_until':
                    dt.date.today() + dt.timedelta(days=2)})
            make_rule(team, method='round_robin')
            leads = new_leads(3)
            Lead.assign(leads)
            self.assertEqual({Lead(l.id).owner for l in leads}, {ravi})

    @with_transaction()
    def test_only_when_open_rule_waits_for_the_opening(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            calendar = always_closed_now()
            team, (asha,) = make_team('asha')
            make_rule(team, method='round_robin', only_when_open=True)
            lead, = new_leads()
            self.assertEqual(Lead.assign([lead]), {})
            lead = Lead(lead.id)
            self.assertIsNone(lead.owner)
            self.assertEqual(lead.reassign_at,
                calendar.next_opening(lead.reassign_at))
            self.assertGreater(lead.reassign_at, utcnow())

    @with_transaction()
    def test_untouched_lead_goes_to_the_next_member(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            always_open()
            team, (asha, ravi) = make_team('asha', 'ravi')
            make_rule(team, method='round_robin', reassign_hours=2)
            lead, = new_leads()
            Lead.assign([lead])
            lead = Lead(lead.id)
            self.assertEqual(lead.owner, asha)
            self.assertEqual(lead.reassign_at - lead.assigned_at,
                dt.timedelta(hours=2))
            table = Lead.__table__()
            Transaction().connection.cursor().execute(*table.update(
                    [table.reassign_at], [utcnow() - dt.timedelta(minutes=1)],
                    where=table.id == lead.id))
            Lead.reassign_due()
            self.assertEqual(Lead(lead.id).owner, ravi)

    @with_transaction()
    def test_reassign_query_uses_its_index(self):
        Lead = Pool().get('crm.lead')
        table = Lead.__table__()
        query = table.select(table.id, where=table.reassign_at <= utcnow(),
            order_by=[table.reassign_at.asc], limit=10)
        self.assertEqual(full_scans(*tuple(query), Lead._table), [])
        self.assertEqual(full_scans(
                *tuple(Lead.sla_due_query(utcnow(), 10)), Lead._table), [])

    @with_transaction()
    def test_assignment_is_logged_with_its_rule(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            always_open()
            team, (asha,) = make_team('asha')
            make_rule(team, name="Pune leads", method='round_robin')
            lead, = new_leads()
            Message.create([{'lead': lead.id, 'direction': 'inbound',
                        'channel': 'whatsapp', 'status': 'received',
                        'at': utcnow(), 'body': "Hi"}])
            Lead.assign([lead])
            events = [m.body for m in Message.search([
                        ('lead', '=', lead.id), ('channel', '=', 'event')])]
            self.assertEqual(events,
                ["Assigned to Asha (rule: Pune leads, round robin)"])


class SlaTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_new_lead_is_due_in_working_hours_from_capture(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Calendar = pool.get('crm.business_calendar')
        with set_company(create_company()):
            lead, = new_leads()
            calendar = Calendar.get_default()
            self.assertEqual(lead.sla_target, 'other')
            self.assertEqual(lead.sla_due_at, calendar.add_working(
                    lead.sla_started_at, dt.timedelta(hours=24)))
            self.assertEqual(lead.sla_state, 'on_time')
            self.assertIn(lead, Lead.search([('sla_state', '=', 'on_time')]))

    @with_transaction()
    def test_breach_reminds_then_escalates_owner_then_manager(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Notification = pool.get('res.notification')
        Message = pool.get('crm.message')
        User = pool.get('res.user')
        with set_company(create_company()):
            always_open()
            team, (asha, boss) = make_team('asha', 'boss')
            User.write([asha], {'email': 'asha@example.in'})
            team.manager = boss
            team.save()
            lead, = new_leads(owner=asha.id, team=team.id)

            def move(**times):
                Lead.write([lead], times)

            def chased():
                Lead.chase_first_responses()
                return [(n.user.login, n.label) for n in Notification.search(
                        [], order=[('id', 'ASC')])]
            now = utcnow()
            move(sla_next_at=now - dt.timedelta(seconds=1))
            self.assertEqual(chased(), [
                    ('asha', "Answer Lead 0 by " + lead.sla_due_at.replace(
                            tzinfo=dt.timezone.utc).astimezone(
                            Pool().get('crm.business_calendar').get_default()
                            .clock.tzinfo).strftime('%d %b %H:%M'))])
            move(sla_due_at=now - dt.timedelta(hours=2),
                sla_next_at=now - dt.timedelta(hours=2))
            self.assertEqual(chased()[1:], [
                    ('asha', "Lead 0 is waiting past the target")])
            self.assertEqual(Lead(lead.id).sla_state, 'breached')
            alert, = Message.search([('kind', '=', 'sla_alert')])
            self.assertEqual((alert.channel, alert.address, alert.status),
                ('email', 'asha@example.in', 'queued'))
            self.assertEqual(Lead(lead.id).sla_next_at,
                now - dt.timedelta(hours=1))
            self.assertEqual(chased()[2:], [
                    ('boss', "Lead 0 still unanswered (Asha)")])
            self.assertIsNone(Lead(lead.id).sla_next_at)

    @with_transaction()
    def test_logged_call_stops_the_clock_and_measures_working_time(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            always_open()
            team, (asha,) = make_team('asha')
            lead, = new_leads(owner=asha.id)
            started = lead.sla_started_at
            Message.create([{'lead': lead.id, 'direction': 'outbound',
                        'channel': 'call', 'status': 'logged',
                        'at': started + dt.timedelta(minutes=7),
                        'author': asha.id, 'call_outcome': 'connected'}])
            lead = Lead(lead.id)
            self.assertEqual(lead.first_response_seconds, 7 * 60)
            self.assertIsNone(lead.sla_next_at)
            self.assertEqual(lead.sla_state, 'met')

    @with_transaction()
    def test_automated_step_does_not_stop_the_clock(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        with set_company(create_company()):
            lead, = new_leads()
            Message.create([{'lead': lead.id, 'direction': 'outbound',
                        'channel': 'whatsapp', 'status': 'queued',
                        'at': utcnow(), 'body': "Welcome!"}])
            lead = Lead(lead.id)
            self.assertIsNone(lead.first_response_at)
            self.assertIsNotNone(lead.sla_next_at)

    @with_transaction()
    def test_report_gives_median_and_share_within_target_per_rep(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Report = pool.get('crm.report.first_response')
        with set_company(create_company()):
            team, (asha,) = make_team('asha')
            leads = new_leads(3, owner=asha.id)
            now = utcnow()
            for lead, minutes, late in zip(leads, [5, 20, 90], [0, 0, 1]):
                Lead.write([lead], {'first_response_at': now,
                        'first_response_seconds': minutes * 60,
                        'sla_due_at': now + dt.timedelta(
                            minutes=-1 if late else 1)})
            with Transaction().set_context(group_by='rep'):
                row, = Report.search([])
                self.assertEqual((row.name, row.leads, row.answered),
                    ("Asha", 3, 3))
                self.assertEqual(row.median_time, dt.timedelta(minutes=20))
                self.assertEqual(row.within_target, 66.7)
