"""The Import Leads wizard of the desk."""
import io

from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval
from trytond.wizard import Button, StateTransition, StateView, Wizard

from ..consent import CONSENT_CHANNELS
from .report import ProblemReport

# How many problems the desk shows inline; the CSV report has all of them.
SHOWN_PROBLEMS = 200


class ImportStart(ModelView):
    "Import Leads"
    __name__ = 'crm.lead.import.start'
    file = fields.Binary(
        "File", required=True, filename='filename',
        help="A CSV or Excel (.xlsx) file with a header row and one lead "
        "per row.")
    filename = fields.Char("File Name")
    source = fields.Many2One(
        'crm.source', "Source", required=True,
        help="Where these leads came from; set on the new leads.")
    dry_run = fields.Boolean(
        "Dry Run",
        help="Check the file and count what would be imported, without "
        "saving anything.")
    consent_basis = fields.Char(
        "Consent Basis",
        help="Why these people may be messaged, e.g. \"Asked for a call "
        "back at the Powai site office, Nov 2026\". Leave empty when they "
        "have not agreed: then no consent is recorded.")
    consent_channel = fields.Selection(
        CONSENT_CHANNELS, "Consent For",
        states={
            'invisible': ~Bool(Eval('consent_basis')),
            'required': Bool(Eval('consent_basis')),
            })

    @classmethod
    def default_source(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id('kraya_crm', 'source_import')
        except KeyError:
            return None

    @classmethod
    def default_dry_run(cls):
        return False

    @classmethod
    def default_consent_channel(cls):
        return 'whatsapp'


class ImportResult(ModelView):
    "Import Leads"
    __name__ = 'crm.lead.import.result'
    summary = fields.Text("Summary", readonly=True)
    problems = fields.Text("Problems", readonly=True)
    report = fields.Binary(
        "Problem Report", filename='report_filename', readonly=True,
        help="Every problem as CSV, with the row's cells: fix the rows and "
        "import this file again.")
    report_filename = fields.Char("Report File Name", readonly=True)
    dry_run = fields.Boolean("Dry Run", readonly=True)


class Import(Wizard):
    "Import Leads"
    __name__ = 'crm.lead.import'
    start = StateView('crm.lead.import.start',
        'kraya_crm.lead_import_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Import", 'import_', 'tryton-import', default=True),
            ])
    import_ = StateTransition()
    result = StateView('crm.lead.import.result',
        'kraya_crm.lead_import_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            Button("Import for Real", 'import_for_real', 'tryton-import',
                states={'invisible': ~Eval('dry_run')}),
            ])
    import_for_real = StateTransition()

    def transition_import_(self):
        Lead = Pool().get('crm.lead')
        stream = io.StringIO()
        report = ProblemReport(stream)
        summary = Lead.import_file(
            io.BytesIO(self.start.file), self.start.filename,
            source=self.start.source, dry_run=self.start.dry_run,
            consent_channel=self.start.consent_channel,
            consent_basis=self.start.consent_basis, report=report)
        self.result.summary = summary.text()
        self.result.dry_run = summary.dry_run
        lines = stream.getvalue().splitlines()
        shown = lines[1:SHOWN_PROBLEMS + 1]
        if len(lines) - 1 > len(shown):
            shown.append(f"... and {len(lines) - 1 - len(shown):,} more in "
                "the problem report")
        self.result.problems = '\n'.join(shown)
        if report.count:
            stem = (self.start.filename or 'leads').rsplit('.', 1)[0]
            self.result.report = stream.getvalue().encode('utf-8-sig')
            self.result.report_filename = f'{stem}.errors.csv'
        else:
            self.result.report = None
            self.result.report_filename = None
        return 'result'

    def transition_import_for_real(self):
        self.start.dry_run = False
        return self.transition_import_()

    def default_result(self, fields):
        return {name: getattr(self.result, name, None) for name in [
                'summary', 'problems', 'report', 'report_filename',
                'dry_run']}
