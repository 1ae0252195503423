"""A row's cells to a lead's values, or what is wrong with the row. The
parser may run in a child process, which must not touch the database: a
problem says which message tells it (Problem.text, in message.xml), and the
importer writes that text in the parent."""
import re
from decimal import Decimal
from typing import NamedTuple

from trytond.i18n import gettext

from ..capture import identity_keys
from ..contact import InvalidPhone, normalize_email, normalize_phone

YES_NO = {'yes', 'y', 'true', '1', 'haan', 'no', 'n', 'false', '0', 'nahi'}
EMAIL = re.compile(r'^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$')
# 9.19876543210E+11 (Excel's scientific notation for a long number)
SCIENTIFIC = re.compile(r'^\+?(\d)(?:\.(\d+))?[eE]\+?(\d+)$')
DECIMAL_ZERO = re.compile(r'^(\+?\d+)\.0+$')


class Problem(NamedTuple):
    "What is wrong with a value of a row; fatal keeps the row out."
    field: str
    message: str  # the id of its text in message.xml, without the module
    params: dict
    fatal: bool

    def text(self):
        return gettext(f'kraya_crm.{self.message}', **self.params)


class BadPhone(ValueError):
    "A cell that is no phone number: the message and params of its Problem."

    def __init__(self, message, **params):
        super().__init__(message)
        self.message, self.params = message, params


class RowParser:
    "Turns a row's cells into lead values, or says what is wrong with it."

    def __init__(self, columns, states):
        self.columns = columns
        self.states = states

    def parse(self, cells):
        """Return (values, problems), problems a list of Problem: a fatal
        one keeps the row out, another drops only the value."""
        given = self.columns.cells_of(cells)
        values, problems = {}, []
        name = given.get('name') or ' '.join(filter(None, [
                    given.get('first_name'), given.get('last_name')]))
        if name:
            values['name'] = ' '.join(name.split())
        for field in ('company_name', 'city', 'campaign', 'notes'):
            if field in given:
                values[field] = given[field]
        for field in ('phone', 'whatsapp'):
            text = given.get(field)
            if not text or (field == 'whatsapp' and text.lower() in YES_NO):
                # A yes/no WhatsApp column: the mobile is (not) on WhatsApp.
                continue
            try:
                values[field] = phone_number(text)
            except BadPhone as bad:
                problems.append(Problem(field, bad.message, bad.params, True))
        if 'whatsapp' in values and values['whatsapp'] == values.get('phone'):
            del values['whatsapp']
        if text := given.get('email'):
            email = normalize_email(text)
            if EMAIL.match(email):
                values['email'] = email
            else:
                problems.append(Problem('email', 'msg_import_not_email',
                        {'value': text}, True))
        if text := given.get('state'):
            subdivision = self.states.get(text)
            if subdivision:
                values['subdivision'] = subdivision
            else:
                problems.append(Problem('state', 'msg_import_not_state',
                        {'value': text}, False))
        if not problems and not identity_keys(values):
            field = next((f for f in ('phone', 'email', 'whatsapp')
                    if f in self.columns.index), 'phone')
            problems.append(
                Problem(field, 'msg_import_unreachable', {}, True))
        return values, problems


def phone_number(text):
    """The phone number in E.164. Undoes what Excel does to long numbers
    (9.19876543210E+11, 919876543210.0) and refuses the ones whose digits
    Excel rounded away (9.19877E+11). Raises BadPhone."""
    text = text.strip()
    if '.' not in text:
        pass
    elif match := DECIMAL_ZERO.match(text):
        text = match.group(1)
    elif match := SCIENTIFIC.match(text):
        first, rest, exponent = match.groups()
        digits = 1 + len(rest or '')
        if digits < int(exponent) + 1:
            raise BadPhone('msg_import_phone_rounded', value=text)
        text = '%d' % Decimal(text.lstrip('+'))
    try:
        phone = normalize_phone(text)
    except InvalidPhone:
        phone = None
    if phone is None:
        raise BadPhone('msg_import_not_phone', value=text)
    return phone
