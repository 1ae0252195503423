"""e-invoicing: a company above the threshold (₹5 crore of turnover)
reports each B2B invoice to the Invoice Registration Portal as INV-01 JSON
(version 1.1) and gets back an IRN and a signed QR code, which must then
be printed on the invoice.

The export is validated against einvoice_schema.json, our written-down
copy of the notified schema (it cannot be fetched here), so a refusal is
said before the portal says it. The IRP's answer (its JSON, or the IRN and
QR typed in) is stored once: an IRN never changes."""
import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import EInvoiceError

SCHEMA_PATH = Path(__file__).parent / 'einvoice_schema.json'
IRN = re.compile(r'^[0-9a-f]{64}$')
# Tryton unit symbol -> GST unit quantity code (UQC)
UNITS = {'u': 'NOS', 'kg': 'KGS', 'g': 'GMS', 'm': 'MTR', 'l': 'LTR',
    'h': 'OTH'}
CENTS = Decimal('0.01')


def schema():
    return json.loads(SCHEMA_PATH.read_text())


def schema_errors(document):
    "What is wrong with an INV-01 document, one line each (none: valid)."
    import jsonschema
    validator = jsonschema.Draft7Validator(schema())
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or 'document'}: "
        f"{error.message}" for error in validator.iter_errors(document))


def money(amount):
    return float(Decimal(amount).quantize(CENTS))


def party_details(party, address, gstin):
    "SellerDtls/BuyerDtls of a party at an address."
    lines = [l.strip() for l in (address.street or '').splitlines()
        if l.strip()] if address else []
    details = {
        'Gstin': gstin,
        'LglNm': party.name[:100],
        'Addr1': (lines[0] if lines else (address.city or ''))[:100]
        if address else '',
        'Loc': ((address.city or '') if address else '')[:50],
        'Pin': int(address.postal_code) if address and (
            address.postal_code or '').strip().isdigit() else 0,
        'Stcd': (address.subdivision.gst_state_code
            if address and address.subdivision else None)
        or (gstin or '')[:2],
        }
    if len(lines) > 1:
        details['Addr2'] = ', '.join(lines[1:])[:100]
    return details


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'
    einvoice_irn = fields.Char("IRN", size=64,
        states={'readonly': Bool(Eval('einvoice_irn'))},
        help="The Invoice Reference Number the IRP gave the invoice.")
    einvoice_ack_number = fields.Char("Acknowledgement No.",
        states={'readonly': Bool(Eval('einvoice_irn'))})
    einvoice_ack_date = fields.DateTime("Acknowledgement Date",
        states={'readonly': Bool(Eval('einvoice_irn'))})
    einvoice_signed_qr = fields.Text("Signed QR Code",
        states={'readonly': Bool(Eval('einvoice_irn'))},
        help="The IRP's signed QR code, printed on the invoice.")
    einvoice_applies = fields.Function(fields.Boolean("e-Invoice Applies"),
        'get_einvoice_applies')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # The IRP answers after posting: its answer is stored on a posted
        # invoice (and then never changes, see write).
        cls._check_modify_exclude |= {'einvoice_irn', 'einvoice_ack_number',
            'einvoice_ack_date', 'einvoice_signed_qr'}
        cls._buttons.update({
                'einvoice': {
                    'invisible': (~Eval('einvoice_applies', False)
                        | ~Eval('state').in_(['posted', 'paid'])),
                    'depends': ['einvoice_applies', 'state'],
                    },
                })

    def get_einvoice_applies(self, name):
        return bool(self.type == 'out' and self.company
            and self.company.gst_turnover_above_5_crore)

    @classmethod
    @ModelView.button_action('kraya_crm.wizard_einvoice')
    def einvoice(cls, invoices):
        pass

    @classmethod
    def validate_fields(cls, invoices, field_names):
        super().validate_fields(invoices, field_names)
        if field_names and 'einvoice_irn' not in field_names:
            return
        for invoice in invoices:
            if invoice.einvoice_irn and not IRN.match(invoice.einvoice_irn):
                raise EInvoiceError(gettext('kraya_crm.msg_irn_invalid',
                        irn=invoice.einvoice_irn))

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        for invoices, values in zip(actions, actions):
            if 'einvoice_irn' in values:
                for invoice in invoices:
                    if invoice.einvoice_irn and (
                            values['einvoice_irn'] != invoice.einvoice_irn):
                        raise EInvoiceError(gettext(
                                'kraya_crm.msg_irn_stored',
                                invoice=invoice.rec_name,
                                irn=invoice.einvoice_irn))
        super().write(*args)

    def einvoice_document(self):
        """The INV-01 (version 1.1) document of a posted B2B invoice or
        credit note; EInvoiceError says why there is none."""
        pool = Pool()
        Tax = pool.get('account.tax')
        company, party = self.company, self.party
        if not party.gstin:
            raise EInvoiceError(gettext('kraya_crm.msg_einvoice_b2b_only',
                    invoice=self.rec_name, party=party.rec_name))
        credit_note = self.total_amount < 0
        sign = -1 if credit_note else 1
        items = []
        for number, line in enumerate(self.line_lines, 1):
            amounts = {'cgst': Decimal(0), 'sgst': Decimal(0),
                'igst': Decimal(0)}
            rate = Decimal(0)
            for tax_line in Tax.compute(line.taxes, line.unit_price,
                    line.quantity, self.tax_date):
                kind = tax_line['tax'].name.split()[0].lower()
                amounts[kind] += tax_line['amount']
                rate += (tax_line['tax'].rate or 0) * 100
            value = line.amount * sign
            taxes = {k: self.currency.round(v * sign)
                for k, v in amounts.items()}
            product = line.product
            items.append({
                    'SlNo': str(number),
                    'PrdDesc': (line.description or (
                            product.rec_name if product else ''))[:300],
                    'IsServc': 'Y' if not product
                    or product.type == 'service' else 'N',
                    'HsnCd': product.hsn_sac_for(company)
                    if product and product.template.hsn_sac else '',
                    'Qty': float(line.quantity * sign),
                    'Unit': UNITS.get(line.unit.symbol, 'OTH')
                    if line.unit else 'OTH',
                    'UnitPrice': float(line.unit_price),
                    'TotAmt': money(value),
                    'Discount': 0.0,
                    'AssAmt': money(value),
                    'GstRt': float(rate.normalize()) if rate else 0,
                    'IgstAmt': money(taxes['igst']),
                    'CgstAmt': money(taxes['cgst']),
                    'SgstAmt': money(taxes['sgst']),
                    'TotItemVal': money(value + sum(taxes.values())),
                    })
        totals = {'cgst': Decimal(0), 'sgst': Decimal(0), 'igst': Decimal(0)}
        for tax in self.taxes:
            totals[tax.tax.name.split()[0].lower()] += tax.amount * sign
        buyer = party_details(party, self.invoice_address, party.gstin)
        buyer['Pos'] = (self.place_of_supply.gst_state_code
            if self.place_of_supply else buyer['Stcd'])
        return {
            'Version': '1.1',
            'TranDtls': {
                'TaxSch': 'GST',
                'SupTyp': 'SEZWP' if party.gst_registration == 'sez'
                else 'B2B',
                'RegRev': 'Y' if self.gst_reverse_charge else 'N',
                'IgstOnIntra': 'N',
                },
            'DocDtls': {
                'Typ': 'CRN' if credit_note else 'INV',
                'No': self.number or '',
                'Dt': self.invoice_date.strftime('%d/%m/%Y')
                if self.invoice_date else '',
                },
            'SellerDtls': party_details(company.party,
                company.party.address_get(type='invoice'), company.gstin),
            'BuyerDtls': buyer,
            'ItemList': items,
            'ValDtls': {
                'AssVal': money(self.untaxed_amount * sign),
                'CgstVal': money(totals['cgst']),
                'SgstVal': money(totals['sgst']),
                'IgstVal': money(totals['igst']),
                'TotInvVal': money(self.total_amount * sign),
                },
            }

    def einvoice_json(self):
        "The INV-01 JSON, validated against the schema, or EInvoiceError."
        document = self.einvoice_document()
        errors = schema_errors(document)
        if errors:
            raise EInvoiceError(gettext('kraya_crm.msg_einvoice_invalid',
                    invoice=self.rec_name, errors='\n'.join(errors)))
        return json.dumps(document, indent=2, ensure_ascii=False)

    @classmethod
    def store_irn(cls, invoices, answer):
        """Store the IRP's answer (Irn, AckNo, AckDt, SignedQRCode, as its
        JSON has them) on invoices that have no IRN yet."""
        irn = (answer.get('Irn') or '').strip().lower()
        if not IRN.match(irn):
            raise EInvoiceError(gettext('kraya_crm.msg_irn_invalid', irn=irn))
        ack_date = answer.get('AckDt')
        if isinstance(ack_date, str) and ack_date:
            ack_date = dt.datetime.strptime(ack_date[:19], '%Y-%m-%d %H:%M:%S')
        cls.write([i for i in invoices if not i.einvoice_irn], {
                'einvoice_irn': irn,
                'einvoice_ack_number': str(answer.get('AckNo') or '') or None,
                'einvoice_ack_date': ack_date or None,
                'einvoice_signed_qr': answer.get('SignedQRCode') or None,
                })


class EInvoiceStart(ModelView):
    "e-Invoice"
    __name__ = 'account.invoice.einvoice.start'
    invoice = fields.Many2One('account.invoice', "Invoice", readonly=True)
    json_file = fields.Binary("INV-01 JSON", filename='json_filename',
        readonly=True,
        help="Upload it to the Invoice Registration Portal.")
    json_filename = fields.Char("File Name", readonly=True)
    irp_answer = fields.Binary("IRP Answer (JSON)",
        help="The portal's answer with the IRN, the acknowledgement and the "
        "signed QR code; or type them below.")
    irn = fields.Char("IRN", size=64)
    ack_number = fields.Char("Acknowledgement No.")
    ack_date = fields.DateTime("Acknowledgement Date")
    signed_qr = fields.Text("Signed QR Code")


class EInvoice(Wizard):
    "Export the INV-01 JSON and store the IRN"
    __name__ = 'account.invoice.einvoice'
    start = StateView('account.invoice.einvoice.start',
        'kraya_crm.einvoice_start_view_form', [
            Button("Close", 'end', 'tryton-cancel'),
            Button("Store IRN", 'store', 'tryton-ok', default=True),
            ])
    store = StateTransition()

    def default_start(self, fields):
        invoice = self.record
        return {
            'invoice': invoice.id,
            'json_file': invoice.einvoice_json().encode(),
            'json_filename': f"{(invoice.number or 'invoice').replace('/', '-')}"
            '.json',
            'irn': invoice.einvoice_irn,
            'ack_number': invoice.einvoice_ack_number,
            'ack_date': invoice.einvoice_ack_date,
            'signed_qr': invoice.einvoice_signed_qr,
            }

    def transition_store(self):
        start = self.start
        if start.irp_answer:
            try:
                answer = json.loads(start.irp_answer)
            except ValueError:
                raise EInvoiceError(gettext(
                        'kraya_crm.msg_irp_answer_not_json'))
            # The IRP wraps its answer in "Data" (a JSON string) or not.
            data = answer.get('Data', answer) if isinstance(answer, dict) \
                else {}
            if isinstance(data, str):
                data = json.loads(data)
        else:
            data = {'Irn': start.irn, 'AckNo': start.ack_number,
                'AckDt': start.ack_date, 'SignedQRCode': start.signed_qr}
        if data.get('Irn') or not self.record.einvoice_irn:
            self.model.store_irn([self.record], data)
        return 'end'
