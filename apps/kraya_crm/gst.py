"""GST: the state codes of India's states, GSTINs checked on parties, HSN
and SAC codes on products, and the place of supply that picks the taxes.

A product carries "GST 18%", which is CGST 9% + SGST 9%: a supply within
the supplier's state. The company's tax rule (account_in.xml, "GST by
place of supply") swaps it for IGST 18% when the place of supply is
another state, an SEZ or abroad. The rule line matches on `gst_supply`,
which the sale and invoice lines put in their tax rule pattern; so the
rates stay data (taxes with dates) and only the state comparison is code.

Place of supply (IGST Act, sections 10 and 12, as a small business meets
them): the state of the customer's invoice address, else the state of
their GSTIN, else (an unregistered buyer with no address on record) the
supplier's own state."""
import re

from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval

from .exceptions import GstinError, HsnSacError

GSTIN = 'in_vat'  # Tryton's type of a GSTIN: India's VAT number
REGISTRATIONS = [
    ('regular', "Registered (has a GSTIN)"),
    ('unregistered', "Unregistered (consumer, B2C)"),
    ('sez', "SEZ unit or developer"),
    ]
SUPPLIES = [
    (None, ""),
    ('intra', "Within the state (CGST + SGST)"),
    ('inter', "To another state, an SEZ or abroad (IGST)"),
    ]
HSN_SAC = re.compile(r'^(\d{4}|\d{6}|\d{8})$')


def gst_codes(subdivision):
    "The GSTIN state codes of a state, the printed one first."
    return ((subdivision.gst_state_codes or '').split()
        if subdivision else [])


def state_of_gstin(gstin):
    "The state (country.subdivision) a GSTIN is registered in, or None."
    Subdivision = Pool().get('country.subdivision')
    if not gstin:
        return None
    states = Subdivision.search([
            ('gst_state_codes', 'like', f'%{gstin[:2]}%'),
            ('country.code', '=', 'IN'),
            ])
    for state in states:
        if gstin[:2] in gst_codes(state):
            return state
    return None


def place_of_supply(party, address):
    "The state a supply to `party` at `address` is made in, or None."
    if address and address.subdivision:
        return address.subdivision
    return party.gst_state if party else None


def supply_kind(company, party, address):
    """'intra' when the supply stays in the company's state (CGST + SGST),
    'inter' when it leaves it, goes to an SEZ or abroad (IGST)."""
    if not company or not party:
        return None
    if party.gst_registration == 'sez':
        return 'inter'
    if address and address.country and address.country.code != 'IN':
        return 'inter'
    home = company.gst_state
    place = place_of_supply(party, address) or home
    return 'intra' if place == home else 'inter'


class Subdivision(metaclass=PoolMeta):
    __name__ = 'country.subdivision'
    gst_state_codes = fields.Char("GST State Codes",
        help="The first two digits of a GSTIN registered in this state "
        "(the one printed first; Andhra Pradesh has its old and new code).")

    @property
    def gst_state_code(self):
        codes = gst_codes(self)
        return codes[0] if codes else None


class Company(metaclass=PoolMeta):
    __name__ = 'company.company'
    gst_state = fields.Function(fields.Many2One(
            'country.subdivision', "GST State",
            help="The state of the company's address: where its supplies "
            "start from."), 'get_gst_state')
    gst_turnover_above_5_crore = fields.Boolean(
        "Turnover above ₹5 crore",
        help="Aggregate annual turnover above ₹5 crore: invoices show "
        "6-digit HSN/SAC codes (4 digits below) and can be exported as "
        "e-invoices (INV-01).")

    @classmethod
    def default_gst_turnover_above_5_crore(cls):
        return False

    def get_gst_state(self, name):
        state = self.party.gst_state if self.party else None
        return state.id if state else None

    @property
    def gstin(self):
        return self.party.gstin if self.party else None

    @property
    def hsn_digits(self):
        "How many digits of the HSN/SAC codes its invoices show (Rule 46)."
        return 6 if self.gst_turnover_above_5_crore else 4


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'
    gst_registration = fields.Selection(REGISTRATIONS, "GST Registration",
        help="A registered customer's invoices carry their GSTIN; "
        "an SEZ is always charged IGST.")
    gstin = fields.Function(fields.Char("GSTIN"), 'get_gstin',
        searcher='search_gstin')
    gst_state = fields.Function(fields.Many2One(
            'country.subdivision', "GST State",
            help="The state of the first address that has one, else the "
            "state of the GSTIN."), 'get_gst_state')

    @classmethod
    def default_gst_registration(cls):
        return 'unregistered'

    def get_gstin(self, name):
        for identifier in self.identifiers:
            if identifier.type == GSTIN:
                return identifier.code
        return None

    @classmethod
    def search_gstin(cls, name, clause):
        return [('identifiers', 'where', [
                    ('code', clause[1], clause[2]),
                    ('type', '=', GSTIN)])]

    def get_gst_state(self, name):
        for address in self.addresses:
            if address.subdivision:
                return address.subdivision.id
        state = state_of_gstin(self.gstin)
        return state.id if state else None

    @classmethod
    def validate(cls, parties):
        super().validate(parties)
        for party in parties:
            for identifier in party.identifiers:
                if identifier.type == GSTIN:
                    identifier.check_gstin_state()


class Address(metaclass=PoolMeta):
    __name__ = 'party.address'

    @classmethod
    def validate(cls, addresses):
        super().validate(addresses)
        for address in addresses:
            for identifier in address.party.identifiers:
                if identifier.type == GSTIN:
                    identifier.check_gstin_state()


class PartyIdentifier(metaclass=PoolMeta):
    __name__ = 'party.identifier'

    def check_code(self):
        if self.type != GSTIN:
            return super().check_code()
        self.check_gstin()

    def check_gstin(self):
        """A GSTIN is 15 characters whose last is a check character: say
        which rule it breaks, then whether its state is the party's."""
        from stdnum.exceptions import (
            InvalidChecksum, InvalidComponent, InvalidLength, ValidationError)
        from stdnum.in_ import gstin
        from stdnum.util import clean
        party = self.party.rec_name if self.party else ''
        number = gstin.compact(self.code or '')
        try:
            gstin.validate(number)
        except InvalidChecksum:
            from stdnum import luhn
            alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'
            expected = luhn.calc_check_digit(number[:14], alphabet)
            raise GstinError(gettext('kraya_crm.msg_gstin_check_digit',
                    gstin=number, party=party, expected=expected))
        except (InvalidLength, InvalidComponent, ValidationError):
            raise GstinError(gettext('kraya_crm.msg_gstin_invalid',
                    gstin=clean(self.code or '', ''), party=party,
                    length=len(number)))
        self.check_gstin_state()

    def check_gstin_state(self):
        "The first two digits must be the GST code of the party's state."
        if not self.party or not self.code:
            return
        for address in self.party.addresses:
            state = address.subdivision
            if not state or not state.gst_state_codes:
                continue
            if self.code[:2] not in gst_codes(state):
                raise GstinError(gettext('kraya_crm.msg_gstin_state',
                        gstin=self.code, party=self.party.rec_name,
                        code=self.code[:2], state=state.name,
                        state_code='/'.join(gst_codes(state))))


class ProductTemplate(metaclass=PoolMeta):
    __name__ = 'product.template'
    hsn_sac = fields.Char("HSN/SAC Code",
        help="The HSN code of goods or the SAC code of services, 4, 6 or 8 "
        "digits: invoices print 4 up to ₹5 crore of turnover, 6 above.")

    @classmethod
    def validate_fields(cls, templates, field_names):
        super().validate_fields(templates, field_names)
        if field_names and 'hsn_sac' not in field_names:
            return
        for template in templates:
            if template.hsn_sac and not HSN_SAC.match(template.hsn_sac):
                raise HsnSacError(gettext('kraya_crm.msg_hsn_sac_invalid',
                        code=template.hsn_sac, product=template.rec_name))

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('hsn_sac'):
            values['hsn_sac'] = re.sub(r'[\s.]', '', values['hsn_sac'])
        return values


class Product(metaclass=PoolMeta):
    __name__ = 'product.product'

    def hsn_sac_for(self, company):
        "The code as company's invoices print it (4 or 6 digits)."
        code = self.template.hsn_sac
        return code[:company.hsn_digits] if code else None


class TaxRuleLineTemplate(metaclass=PoolMeta):
    __name__ = 'account.tax.rule.line.template'
    gst_supply = fields.Selection(SUPPLIES, "GST Supply",
        help="Apply only to supplies within the company's state or "
        "to those leaving it.")

    def _get_tax_rule_line_value(self, rule_line=None):
        values = super()._get_tax_rule_line_value(rule_line=rule_line)
        if not rule_line or rule_line.gst_supply != self.gst_supply:
            values['gst_supply'] = self.gst_supply
        return values


class TaxRuleLine(metaclass=PoolMeta):
    __name__ = 'account.tax.rule.line'
    gst_supply = fields.Selection(SUPPLIES, "GST Supply",
        states={
            'readonly': (Eval('template', -1)
                & ~Eval('template_override', False)),
            },
        help="Apply only to supplies within the company's state or "
        "to those leaving it.")


class SaleLine(metaclass=PoolMeta):
    __name__ = 'sale.line'

    @fields.depends('sale', '_parent_sale.company', '_parent_sale.party',
        '_parent_sale.invoice_address')
    def _get_tax_rule_pattern(self):
        pattern = super()._get_tax_rule_pattern()
        if self.sale:
            pattern['gst_supply'] = supply_kind(self.sale.company,
                self.sale.party, self.sale.invoice_address)
        return pattern


class InvoiceLine(metaclass=PoolMeta):
    __name__ = 'account.invoice.line'

    @fields.depends('invoice', '_parent_invoice.company',
        '_parent_invoice.party', '_parent_invoice.invoice_address')
    def _get_tax_rule_pattern(self):
        pattern = super()._get_tax_rule_pattern()
        if self.invoice:
            pattern['gst_supply'] = supply_kind(self.invoice.company,
                self.invoice.party, self.invoice.invoice_address)
        return pattern


class Invoice(metaclass=PoolMeta):
    __name__ = 'account.invoice'
    place_of_supply = fields.Many2One('country.subdivision',
        "Place of Supply", ondelete='RESTRICT',
        domain=[('country.code', '=', 'IN')],
        states={
            'readonly': Eval('state') != 'draft',
            'invisible': Eval('type') != 'out',
            },
        help="The state the supply is made in; filled from the customer's "
        "address or GSTIN when the invoice is numbered.")
    gst_reverse_charge = fields.Boolean("Reverse Charge",
        states={
            'readonly': Eval('state') != 'draft',
            'invisible': Eval('type') != 'out',
            },
        help="The recipient pays the GST (section 9(3)/9(4)); printed on "
        "the invoice either way.")

    @classmethod
    def default_gst_reverse_charge(cls):
        return False

    @fields.depends('type', 'company', 'party', 'invoice_address')
    def gst_place_of_supply(self):
        "The state of supply by the customer's address or GSTIN."
        if self.type != 'out':
            return None
        return (place_of_supply(self.party, self.invoice_address)
            or (self.company.gst_state if self.company else None))

    @fields.depends(methods=['gst_place_of_supply'])
    def on_change_party(self):
        super().on_change_party()
        self.place_of_supply = self.gst_place_of_supply()

    @classmethod
    def set_number(cls, invoices):
        for invoice in invoices:
            if invoice.type == 'out' and not invoice.place_of_supply:
                invoice.place_of_supply = invoice.gst_place_of_supply()
        super().set_number(invoices)

    @property
    def gst_supply(self):
        "'intra' (CGST + SGST) or 'inter' (IGST), as the taxes were chosen."
        return supply_kind(self.company, self.party, self.invoice_address)
