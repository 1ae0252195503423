"""The GST tax invoice as Rule 46 of the CGST Rules asks for it, printed
from invoice_gst.fodt: PDF through LibreOffice when it is installed
(./crm start and ./crm test install it), else the ODT itself.

The template only prints; what it prints (the parties' blocks, one row per
line, one per tax, the total in words) is worked out here, so that a test
reads the same values the page shows."""
import io
import shutil
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from trytond.report import Report

from .contact import format_inr

ONES = ("Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve "
    "Thirteen Fourteen Fifteen Sixteen Seventeen Eighteen Nineteen").split()
TENS = "_ _ Twenty Thirty Forty Fifty Sixty Seventy Eighty Ninety".split()
# Indian grouping: crore (10^7), lakh (10^5), thousand, hundred.
SCALES = [(10 ** 7, "Crore"), (10 ** 5, "Lakh"), (1000, "Thousand"),
    (100, "Hundred")]


def words_below_100(number):
    if number < 20:
        return ONES[number]
    tens, ones = divmod(number, 10)
    return TENS[tens] + (f' {ONES[ones]}' if ones else '')


def number_in_words(number):
    "12,34,567 -> Twelve Lakh Thirty Four Thousand Five Hundred Sixty Seven"
    if number == 0:
        return ONES[0]
    parts = []
    for scale, name in SCALES:
        if number >= scale:
            count, number = divmod(number, scale)
            # Above 99 crore the crores are counted in Indian words too.
            parts.append(f'{number_in_words(count)} {name}')
    if number:
        parts.append(words_below_100(number))
    return ' '.join(parts)


def amount_in_words(amount):
    """The amount as an Indian invoice says it: "Rupees One Lakh Eighteen
    Thousand Only", "... and Fifty Paise Only"."""
    amount = Decimal(amount).quantize(Decimal('0.01'), ROUND_HALF_UP)
    rupees, paise = divmod(int(abs(amount) * 100), 100)
    text = f'Rupees {number_in_words(rupees)}'
    if paise:
        text += f' and {words_below_100(paise)} Paise'
    return ('Minus ' if amount < 0 else '') + text + ' Only'


def inr(amount):
    "₹1,18,000.00: an invoice shows the paise even when there are none."
    text = format_inr(amount)
    return text if '.' in text else text + '.00'


def quantity_text(quantity):
    return f'{quantity:g}'


def png_of_qr(text, scale=4):
    "A QR code of `text` as PNG bytes."
    import segno
    out = io.BytesIO()
    segno.make(text, error='m').save(out, kind='png', scale=scale, border=2)
    return out.getvalue()


@dataclass
class PartyBlock:
    "A supplier's or recipient's lines on the invoice."
    name: str
    address: list
    gstin: str | None
    state: str | None  # "Maharashtra (27)"


@dataclass
class LineRow:
    number: int
    description: str
    hsn_sac: str
    quantity: str
    unit: str
    unit_price: str
    taxable_value: str
    gst_rate: str


@dataclass
class TaxRow:
    name: str  # CGST 9%
    base: str
    amount: str


@dataclass
class GstInvoice:
    "What the Rule 46 invoice prints, worked out from the invoice."
    title: str
    number: str
    date: str
    supplier: PartyBlock
    recipient: PartyBlock
    place_of_supply: str
    reverse_charge: str
    lines: list = field(default_factory=list)
    taxes: list = field(default_factory=list)
    taxable_total: str = ''
    tax_total: str = ''
    total: str = ''
    total_in_words: str = ''
    amount_due: str = ''
    upi_link: str | None = None
    upi_qr: bytes | None = None
    # A credit note's tax invoices, with their dates (Rule 53).
    against: str = ''
    irn: str | None = None
    irn_qr: bytes | None = None
    signatory: str = ''

    @property
    def document(self):
        "What the number and the total are of: Invoice or Credit Note."
        return "Credit Note" if self.title == "Credit Note" else "Invoice"


def state_label(state):
    if not state:
        return None
    code = state.gst_state_code
    return f'{state.name} ({code})' if code else state.name


def address_lines(address):
    if not address:
        return []
    lines = [l.strip() for l in (address.full_address or '').splitlines()]
    return [l for l in lines if l]


def gst_rate_of(line):
    "18% for a line taxed CGST 9% + SGST 9% or IGST 18%."
    rate = sum((c.rate or Decimal(0) for t in line.taxes
            for c in (t.childs or [t]) if c.type == 'percentage'),
        Decimal(0))
    return f'{(rate * 100).normalize():f}%' if line.taxes else '-'


def credited_invoices(credit_note):
    """The tax invoices a credit note's lines credit, numbered and dated,
    as Rule 53 of the CGST Rules asks a credit note to show."""
    originals = {line.origin.invoice for line in credit_note.lines
        if getattr(line.origin, '__name__', None) == 'account.invoice.line'}
    return ', '.join(f'{i.number} dated {i.invoice_date:%d/%m/%Y}'
        for i in sorted(originals, key=lambda i: (i.invoice_date, i.id)))


def gst_invoice(invoice):
    "The GstInvoice of an account.invoice (customer invoice or credit note)."
    company = invoice.company
    credit_note = invoice.total_amount < 0
    sign = -1 if credit_note else 1
    supplier_address = company.party.address_get(type='invoice')
    supplier = PartyBlock(company.party.name, address_lines(supplier_address),
        company.gstin, state_label(company.gst_state))
    party = invoice.party
    recipient_state = (invoice.invoice_address.subdivision
        if invoice.invoice_address and invoice.invoice_address.subdivision
        else party.gst_state) or invoice.place_of_supply
    recipient = PartyBlock(party.name, address_lines(invoice.invoice_address),
        party.gstin or None, state_label(recipient_state))
    result = GstInvoice(
        title="Credit Note" if credit_note else "Tax Invoice",
        number=invoice.number or "(draft)",
        date=invoice.invoice_date.strftime('%d/%m/%Y')
        if invoice.invoice_date else '',
        supplier=supplier, recipient=recipient,
        place_of_supply=state_label(invoice.place_of_supply) or '',
        reverse_charge="Yes" if invoice.gst_reverse_charge else "No",
        signatory=f'For {company.party.name}')
    for number, line in enumerate(invoice.line_lines, 1):
        result.lines.append(LineRow(number,
                line.description or (line.product.rec_name
                    if line.product else ''),
                (line.product.hsn_sac_for(company) if line.product else None)
                or '',
                quantity_text(line.quantity * sign),
                line.unit.symbol if line.unit else '',
                inr(line.unit_price), inr(line.amount * sign),
                gst_rate_of(line)))
    if credit_note:
        result.against = credited_invoices(invoice)
    for tax in invoice.taxes:
        result.taxes.append(TaxRow(tax.tax.name if tax.tax else tax.description,
                inr(tax.base * sign), inr(tax.amount * sign)))
    result.taxable_total = inr(invoice.untaxed_amount * sign)
    result.tax_total = inr(invoice.tax_amount * sign)
    result.total = inr(invoice.total_amount * sign)
    result.total_in_words = amount_in_words(invoice.total_amount * sign)
    if invoice.state == 'posted' and not credit_note:
        result.amount_due = inr(invoice.amount_to_pay)
        link = invoice.upi_link
        if link:
            result.upi_link = link
            result.upi_qr = png_of_qr(link)
    if invoice.einvoice_irn:
        result.irn = invoice.einvoice_irn
        if invoice.einvoice_signed_qr:
            result.irn_qr = png_of_qr(invoice.einvoice_signed_qr, scale=2)
    return result


def libreoffice():
    "Whether LibreOffice is there to make PDFs."
    return bool(shutil.which('soffice'))


class GstInvoiceReport(Report):
    "The Rule 46 tax invoice (PDF with LibreOffice, else ODT)."
    __name__ = 'account.invoice.gst'

    @classmethod
    def get_context(cls, records, header, data):
        context = super().get_context(records, header, data)
        context['gst_invoice'] = gst_invoice
        context['qr'] = lambda png, cm: (io.BytesIO(png), 'image/png',
            f'{cm}cm', f'{cm}cm')
        return context

    @classmethod
    def convert(cls, report, data, **kwargs):
        if not libreoffice():
            # The rendered template is an ODT already: keep it as it is.
            return 'odt', data
        return super().convert(report, data, **kwargs)

