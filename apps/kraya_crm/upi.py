"""UPI: the company's payment address (VPA) and, on each posted invoice,
a upi://pay link for the amount due with the invoice number as the
transaction reference, printed as a QR code that any UPI app scans."""
import re
import urllib.parse

from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import PoolMeta

from .exceptions import UpiError

# NPCI's virtual payment address: handle@bank, e.g. shreeganesh@okhdfc.
VPA = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{1,255}@[A-Za-z][A-Za-z0-9]{1,63}$')


def upi_link(vpa, payee, amount, reference):
    "upi://pay?pa=...&pn=...&am=...&cu=INR&tr=... (NPCI's deep link)."
    query = urllib.parse.urlencode([
            ('pa', vpa), ('pn', payee), ('am', f'{amount:.2f}'),
            ('cu', 'INR'), ('tr', reference),
            ('tn', f'Invoice {reference}'),
            ], quote_via=urllib.parse.quote)
    return f'upi://pay?{query}'


class Company(metaclass=PoolMeta):
    __name__ = 'company.company'
    upi_vpa = fields.Char("UPI ID (VPA)",
        help="Where customers pay by UPI, e.g. shreeganesh@okhdfc: invoices "
        "carry a payment link and QR code for the amount due.")

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('upi_vpa'):
            values['upi_vpa'] = values['upi_vpa'].strip().lower()
        return values

    @classmethod
    def validate_fields(cls, companies, field_names):
        super().validate_fields(companies, field_names)
        for company in companies:
            if company.upi_vpa and not VPA.match(company.upi_vpa):
                raise UpiError(gettext('kraya_crm.msg_upi_vpa_invalid',
                        vpa=company.upi_vpa))


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'
    upi_link = fields.Function(fields.Char("UPI Payment Link",
            help="Opens the customer's UPI app to pay the amount due."),
        'get_upi_link')

    def get_upi_link(self, name=None):
        vpa = self.company.upi_vpa if self.company else None
        if (not vpa or self.type != 'out' or self.state != 'posted'
                or not self.number or self.amount_to_pay <= 0):
            return None
        return upi_link(vpa, self.company.party.name, self.amount_to_pay,
            self.number)
