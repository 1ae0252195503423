"""One spelling per phone number and email, so that a person is found
whichever way the number was typed (10 digits, 0-prefixed, +91, spaces)."""
import re

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

DEFAULT_REGION = 'IN'
# An Indian mobile as typed: 98765 43210, 098765-43210, +91 98765 43210.
INDIAN_MOBILE = re.compile(r'^(?:\+91|0091|91|0)?([6-9]\d{9})$')
SEPARATORS = re.compile(r'[\s().-]')
# Indian mobile numbers (national part), from phonenumbers' own metadata.
IN_MOBILE_NUMBER = re.compile(PhoneMetadata.metadata_for_region(
        'IN').mobile.national_number_pattern)


class InvalidPhone(ValueError):
    pass


def normalize_phone(value, region=DEFAULT_REGION):
    """Return value in E.164 (+919876543210), None when empty.

    Raises InvalidPhone when the value is not a possible number."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if (region == 'IN' and len(text) == 13 and text.startswith('+91')
            and IN_MOBILE_NUMBER.fullmatch(text[3:])):
        # Already E.164, as every number saved through here is.
        return text
    # Excel turns 919876543210 into 9.19876543210E+11: undo it.
    if 'e+' in text.lower():
        try:
            text = '%d' % float(text)
        except ValueError:
            pass
    if region == 'IN' and (mobile := _indian_mobile(text)):
        return mobile
    if text.startswith('00'):
        text = '+' + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exception:
        raise InvalidPhone(str(exception)) from exception
    if not phonenumbers.is_valid_number(number):
        # 91XXXXXXXXXX without the plus is how WhatsApp and many CSVs give it.
        digits = ''.join(c for c in text if c.isdigit())
        retry = None
        if not text.startswith('+') and len(digits) > 10:
            try:
                retry = phonenumbers.parse('+' + digits, None)
            except phonenumbers.NumberParseException:
                retry = None
        if retry is None or not phonenumbers.is_valid_number(retry):
            raise InvalidPhone(f"{value!r} is not a valid phone number")
        number = retry
    return phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.E164)


def _indian_mobile(text):
    """The E.164 form of an Indian mobile number, None for anything else.
    The same validity check as the general path, without its parser, which
    is three quarters of the cost (imports normalise 100,000s of these)."""
    match = INDIAN_MOBILE.match(SEPARATORS.sub('', text))
    if match and _valid_indian_mobile(match.group(1)):
        return '+91' + match.group(1)


def _valid_indian_mobile(digits):
    # A match of the mobile pattern is valid; anything else (a landline
    # starting with 6-8) gets phonenumbers' whole check.
    return bool(IN_MOBILE_NUMBER.fullmatch(digits)) or \
        phonenumbers.is_valid_number(phonenumbers.PhoneNumber(
                country_code=91, national_number=int(digits)))


def normalize_email(value):
    "Return the email trimmed and lower-cased, None when empty."
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def format_inr(amount):
    """Format a Decimal in Indian digit grouping: ₹5,00,000 (paise shown
    only when there are some)."""
    from decimal import ROUND_HALF_UP, Decimal
    amount = Decimal(amount).quantize(Decimal('0.01'), ROUND_HALF_UP)
    sign = '-' if amount < 0 else ''
    rupees, paise = f'{abs(amount):.2f}'.split('.')
    head, tail = rupees[:-3], rupees[-3:]
    groups = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    if head:
        groups.insert(0, head)
    text = ','.join(groups + [tail])
    if paise != '00':
        text += '.' + paise
    return f'{sign}₹{text}'
