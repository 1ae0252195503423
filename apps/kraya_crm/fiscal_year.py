"""The Indian fiscal year (April to March) and its invoice series.

Each year has its own strict sequences, INV/25-26/00001 for invoices and
CN/25-26/00001 for credit notes: Rule 46 asks for a number of at most 16
characters (letters, digits, '-' and '/') unique in the financial year,
and a gapless series per year is what an assessing officer expects. The
year in the prefix keeps numbers unique across years too. A daily cron
opens the next year (with its periods and series) from March, so
invoicing never stops on the first of April."""
import datetime as dt
import re

from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .exceptions import InvoiceNumberError

NUMBER = re.compile(r'^[A-Za-z0-9/-]{1,16}$')
# sequence field of account.fiscalyear.invoice_sequence: prefix
SERIES = {
    'out_invoice_sequence': 'INV',
    'out_credit_note_sequence': 'CN',
    'in_invoice_sequence': 'BILL',
    'in_credit_note_sequence': 'DN',
    }
PADDING = 5  # INV/25-26/00001: 15 characters, 99,999 invoices a year


def year_start(date):
    "The 1st of April that starts the Indian fiscal year of `date`."
    year = date.year if date.month >= 4 else date.year - 1
    return dt.date(year, 4, 1)


def year_label(start):
    "2025-26 for the year starting on 1 April 2025."
    return f'{start.year}-{(start.year + 1) % 100:02d}'


class FiscalYear(metaclass=PoolMeta):
    __name__ = 'account.fiscalyear'

    @classmethod
    def indian_year(cls, company, date):
        "The fiscal year of `date`, made with its periods and series if new."
        pool = Pool()
        SequenceStrict = pool.get('ir.sequence.strict')
        SequenceType = pool.get('ir.sequence.type')
        InvoiceSequence = pool.get('account.fiscalyear.invoice_sequence')
        ModelData = pool.get('ir.model.data')
        start = year_start(date)
        years = cls.search([
                ('company', '=', company.id),
                ('start_date', '<=', date),
                ('end_date', '>=', date),
                ], limit=1)
        if years:
            return years[0]
        label = year_label(start)
        short = f'{start.year % 100:02d}-{(start.year + 1) % 100:02d}'
        with Transaction().set_context(company=company.id):
            move_sequence = SequenceStrict(name=f"Account moves {label}",
                company=company,
                sequence_type=SequenceType(ModelData.get_id(
                        'account', 'sequence_type_account_move')))
            move_sequence.save()
            invoice_type = SequenceType(ModelData.get_id(
                    'account_invoice', 'sequence_type_account_invoice'))
            series = {field: SequenceStrict(
                    name=f"{prefix} {label}", company=company,
                    sequence_type=invoice_type, prefix=f'{prefix}/{short}/',
                    padding=PADDING)
                for field, prefix in SERIES.items()}
            SequenceStrict.save(list(series.values()))
            year = cls(name=label, company=company, start_date=start,
                end_date=dt.date(start.year + 1, 3, 31),
                move_sequence=move_sequence,
                invoice_sequences=[InvoiceSequence(company=company,
                        **series)])
            year.save()
            cls.create_period([year])
        return year

    @classmethod
    def open_next_indian_years(cls):
        """Every company with a chart of accounts has its fiscal year of
        today and, from March, next April's."""
        pool = Pool()
        Account = pool.get('account.account')
        Company = pool.get('company.company')
        Date = pool.get('ir.date')
        for company in Company.search([]):
            if not Account.search([('company', '=', company.id)], limit=1):
                continue
            with Transaction().set_context(company=company.id):
                today = Date.today()
            cls.indian_year(company, today)
            if today.month == 3:
                cls.indian_year(company, dt.date(today.year, 4, 1))


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'

    @classmethod
    def validate(cls, invoices):
        super().validate(invoices)
        cls.check_gst_numbers(invoices)

    @classmethod
    def check_gst_numbers(cls, invoices):
        """A customer invoice's number: at most 16 letters, digits, '-' or
        '/', and no other invoice of the company has it in that year."""
        pool = Pool()
        Lang = pool.get('ir.lang')
        for invoice in invoices:
            if invoice.type != 'out' or not invoice.number:
                continue
            if not NUMBER.match(invoice.number):
                raise InvoiceNumberError(gettext(
                        'kraya_crm.msg_invoice_number_format',
                        number=invoice.number))
            start = year_start(invoice.invoice_date)
            same = cls.search([
                    ('company', '=', invoice.company.id),
                    ('type', '=', 'out'),
                    ('number', '=', invoice.number),
                    ('invoice_date', '>=', start),
                    ('invoice_date', '<', dt.date(start.year + 1, 4, 1)),
                    ('id', '!=', invoice.id),
                    ], limit=1)
            if same:
                raise InvoiceNumberError(gettext(
                        'kraya_crm.msg_invoice_number_taken',
                        number=invoice.number, year=year_label(start),
                        date=Lang.get().strftime(same[0].invoice_date)))


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('account.fiscalyear|open_next_indian_years',
                "Open the next fiscal year (April-March)"))
