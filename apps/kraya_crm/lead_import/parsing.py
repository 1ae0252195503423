"""A row's cells to a lead's values, or what is wrong with the row."""
import re
from decimal import Decimal

from ..capture import identity_keys
from ..contact import InvalidPhone, normalize_email, normalize_phone

YES_NO = {'yes', 'y', 'true', '1', 'haan', 'no', 'n', 'false', '0', 'nahi'}
EMAIL = re.compile(r'^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$')
# 9.19876543210E+11 (Excel's scientific notation for a long number)
SCIENTIFIC = re.compile(r'^\+?(\d)(?:\.(\d+))?[eE]\+?(\d+)$')
DECIMAL_ZERO = re.compile(r'^(\+?\d+)\.0+$')


class RowParser:
    "Turns a row's cells into lead values, or says what is wrong with it."

    def __init__(self, columns, states):
        self.columns = columns
        self.states = states

    def parse(self, cells):
        """Return (values, problems): problems are (field, reason, fatal);
        a fatal problem keeps the row out, another drops only the value."""
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
            except InvalidPhone as exception:
                problems.append((field, str(exception), True))
        if 'whatsapp' in values and values['whatsapp'] == values.get('phone'):
            del values['whatsapp']
        if text := given.get('email'):
            email = normalize_email(text)
            if EMAIL.match(email):
                values['email'] = email
            else:
                problems.append(
                    ('email', f"not an email address: {text!r}", True))
        if text := given.get('state'):
            subdivision = self.states.get(text)
            if subdivision:
                values['subdivision'] = subdivision
            else:
                problems.append(('state',
                        f"not an Indian state or union territory: {text!r}; "
                        "imported without a state", False))
        if not problems and not identity_keys(values):
            field = next((f for f in ('phone', 'email', 'whatsapp')
                    if f in self.columns.index), 'phone')
            problems.append((field, "no phone, WhatsApp number or email: "
                    "nobody could reach this lead", True))
        return values, problems


def phone_number(text):
    """The phone number in E.164. Undoes what Excel does to long numbers
    (9.19876543210E+11, 919876543210.0) and refuses the ones whose digits
    Excel rounded away (9.19877E+11)."""
    text = text.strip()
    if '.' not in text:
        pass
    elif match := DECIMAL_ZERO.match(text):
        text = match.group(1)
    elif match := SCIENTIFIC.match(text):
        first, rest, exponent = match.groups()
        digits = 1 + len(rest or '')
        if digits < int(exponent) + 1:
            raise InvalidPhone(f"Excel rounded this number to {text}: "
                "format the column as Text and export it again")
        text = '%d' % Decimal(text.lstrip('+'))
    try:
        phone = normalize_phone(text)
    except InvalidPhone:
        phone = None
    if phone is None:
        raise InvalidPhone(f"not a valid phone number: {text!r} (give 10 "
            "digits for India, or + and the country code)")
    return phone
