"""The business behind a site, set up as Tryton's "Configure Company"
wizard does it (the company, then every user without one put in it), with
the Indian setup: India and its states, the rupee shown in Indian digit
grouping, the company in INR on Asia/Kolkata, and the admin in it as a CRM
Manager. ./crm new-site runs it for every site, before the demo loader
adds its data to a demo site; the stages and sources come with the module.

    python -m kraya_site.business --config sites/acme/trytond.conf \\
        --database acme --company "Acme Traders" --state MH

The checks (state, GSTIN) need no database, so ./crm asks again or stops
before it creates one. No trytond import at the top: trytond reads its
configuration when first imported."""
import argparse
import os
import sys
import unicodedata
from dataclasses import dataclass
from decimal import Decimal


# GSTIN's first two digits: the GST state code of each ISO subdivision.
# Andhra Pradesh has its old and new code; the merged Dadra and Nagar
# Haveli and Daman and Diu keeps both of theirs.
GST_STATE_CODES = {
    'IN-JK': {'01'}, 'IN-HP': {'02'}, 'IN-PB': {'03'}, 'IN-CH': {'04'},
    'IN-UK': {'05'}, 'IN-HR': {'06'}, 'IN-DL': {'07'}, 'IN-RJ': {'08'},
    'IN-UP': {'09'}, 'IN-BR': {'10'}, 'IN-SK': {'11'}, 'IN-AR': {'12'},
    'IN-NL': {'13'}, 'IN-MN': {'14'}, 'IN-MZ': {'15'}, 'IN-TR': {'16'},
    'IN-ML': {'17'}, 'IN-AS': {'18'}, 'IN-WB': {'19'}, 'IN-JH': {'20'},
    'IN-OD': {'21'}, 'IN-CG': {'22'}, 'IN-MP': {'23'}, 'IN-GJ': {'24'},
    'IN-DH': {'25', '26'}, 'IN-MH': {'27'}, 'IN-AP': {'28', '37'},
    'IN-KA': {'29'}, 'IN-GA': {'30'}, 'IN-LD': {'31'}, 'IN-KL': {'32'},
    'IN-TN': {'33'}, 'IN-PY': {'34'}, 'IN-AN': {'35'}, 'IN-TS': {'36'},
    'IN-LA': {'38'},
    }
TIMEZONE = 'Asia/Kolkata'


class BusinessError(ValueError):
    "A company name, state or GSTIN that cannot be used, said plainly."


@dataclass
class Business:
    name: str
    state: str  # ISO code, e.g. IN-MH
    gstin: str | None = None
    admin_email: str | None = None
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None


def plain(text):
    "Gujarāt -> Gujarat, so that people find it as they type it."
    return ''.join(c for c in unicodedata.normalize('NFKD', text)
        if not unicodedata.combining(c))


def indian_states():
    "{ISO code: plain name} of India's states and union territories."
    import pycountry
    return {s.code: plain(s.name)
        for s in pycountry.subdivisions.get(country_code='IN')}


def indian_state(text):
    "The ISO code of a state given as MH, IN-MH or Maharashtra."
    states = indian_states()
    wanted = plain((text or '').strip()).upper()
    for code, name in states.items():
        if wanted in {code, code[len('IN-'):], name.upper()}:
            return code
    raise BusinessError(f'"{text}" is not an Indian state or union '
        'territory: give its code (MH, KA, DL...) or its name (Maharashtra)')


def check_gstin(gstin, state):
    """The GSTIN in its compact form, checked, and of the company's state
    (its first two digits are the state's GST code); None when empty."""
    from stdnum.exceptions import ValidationError
    from stdnum.in_ import gstin as stdnum_gstin
    if not (gstin or '').strip():
        return None
    try:
        number = stdnum_gstin.validate(gstin)
    except ValidationError as exception:
        raise BusinessError(f'"{gstin}" is not a valid GSTIN '
            f'({exception.message}): it is 15 characters, e.g. '
            '27AAPFU0939F1ZV') from exception
    if number[:2] not in GST_STATE_CODES.get(state, set()):
        raise BusinessError(f'GSTIN {number} is registered in state code '
            f'{number[:2]}, not in {indian_states()[state]} '
            f'({"/".join(sorted(GST_STATE_CODES[state]))})')
    return number


def check(name, state, gstin=None, admin_email=None, street=None,
        city=None, postal_code=None):
    "A Business of checked values, or BusinessError saying what is wrong."
    name = (name or '').strip()
    if not name:
        raise BusinessError('the company name is empty')
    state = indian_state(state)
    email = (admin_email or '').strip() or None
    if email and ('@' not in email or ' ' in email):
        raise BusinessError(f'"{admin_email}" is not an email address')
    pin = (postal_code or '').replace(' ', '') or None
    if pin and not (len(pin) == 6 and pin.isdigit() and pin[0] != '0'):
        raise BusinessError(f'"{postal_code}" is not a PIN code: six '
            'digits, the first not 0 (e.g. 560001)')
    return Business(name, state, check_gstin(gstin, state), email,
        street=(street or '').strip() or None,
        city=(city or '').strip() or None, postal_code=pin)


# --- In the database (inside a transaction) ---

def set_up(business):
    """Create the site's company with the Indian setup and put the users
    without a company (the admin) in it; returns the company. Nothing is
    made twice: a site that has a company keeps it."""
    from trytond.pool import Pool
    pool = Pool()
    Company = pool.get('company.company')
    Party = pool.get('party.party')
    Address = pool.get('party.address')
    Identifier = pool.get('party.identifier')
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    WizardItem = pool.get('ir.module.config_wizard.item')
    country = setup_india()
    currency = setup_rupee()
    companies = Company.search([], limit=1, order=[('id', 'ASC')])
    if companies:
        company, = companies
    else:
        party = Party(name=business.name, addresses=[Address(
                    street=business.street, city=business.city,
                    postal_code=business.postal_code, country=country,
                    subdivision=subdivision(business.state))])
        if business.gstin:
            party.identifiers = [
                Identifier(type='in_vat', code=business.gstin)]
        party.gst_registration = (
            'regular' if business.gstin else 'unregistered')
        party.save()
        company = Company(party=party, currency=currency, timezone=TIMEZONE)
        company.save()
    # As the wizard's "Add" does; then it need not open at the first login.
    users = User.search([('companies', '=', None)])
    User.write(users, {
            'companies': [('add', [company.id])],
            'company': company.id,
            })
    admin, = User.search([('login', '=', 'admin')])
    manager = ModelData.get_id('kraya_crm', 'group_crm_manager')
    values = {}
    if manager not in {g.id for g in admin.groups}:
        values['groups'] = [('add', [manager])]
    if business.admin_email:
        values['email'] = business.admin_email
    if values:
        User.write([admin], values)
    # Done as its wizards would: the desk need not open them at login.
    WizardItem.write([WizardItem(ModelData.get_id(module, item))
            for module, item in [
                ('company', 'config_wizard_item_company'),
                ('account', 'config_wizard_item_chart_account')]],
        {'state': 'done'})
    Company.set_up_indian_accounting([company])
    return company


def found_or_made(Model, code, **values):
    "The record of this code, made with the values when there is none."
    records = Model.search([('code', '=', code)])
    if records:
        return records[0]
    record = Model(code=code, **values)
    record.save()
    return record


def setup_india():
    "India and its states and union territories (from pycountry)."
    import pycountry
    from trytond.pool import Pool
    pool = Pool()
    Country = pool.get('country.country')
    Subdivision = pool.get('country.subdivision')
    country = found_or_made(Country, code='IN', name="India", code3='IND',
        code_numeric='356')
    existing = {s.code: s for s in Subdivision.search(
            [('country', '=', country.id)])}
    states = []
    for state in pycountry.subdivisions.get(country_code='IN'):
        record = existing.get(state.code) or Subdivision(country=country,
            code=state.code, name=plain(state.name), type=state.type.lower())
        # The state's GSTIN prefix, the one in use first (GST_STATE_CODES).
        record.gst_state_codes = ' '.join(
            sorted(GST_STATE_CODES.get(state.code, ()), reverse=True)) or None
        states.append(record)
    Subdivision.save(states)
    return country


def subdivision(code):
    from trytond.pool import Pool
    Subdivision = Pool().get('country.subdivision')
    subdivision, = Subdivision.search([('code', '=', code)])
    return subdivision


def setup_rupee():
    """The Indian rupee, and Indian digit grouping (5,00,000) for the
    site's language, so that the desk shows ₹5,00,000."""
    from trytond.pool import Pool
    pool = Pool()
    Currency = pool.get('currency.currency')
    Lang = pool.get('ir.lang')
    currency = found_or_made(Currency, code='INR', name="Indian Rupee",
        numeric_code='356', symbol='₹', rounding=Decimal('0.01'), digits=2)
    langs = Lang.search([('code', '=', 'en')])
    Lang.write(langs, {
            'grouping': '[3, 2, 0]',
            'mon_grouping': '[3, 2, 0]',
            'date': '%d/%m/%Y',
            })
    return currency


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', required=True)
    parser.add_argument('--database', required=True)
    parser.add_argument('--company', required=True)
    parser.add_argument('--state', required=True)
    parser.add_argument('--gstin')
    parser.add_argument('--admin-email')
    parser.add_argument('--street')
    parser.add_argument('--city')
    parser.add_argument('--postal-code')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        business = check(args.company, args.state, args.gstin,
            args.admin_email, street=args.street, city=args.city,
            postal_code=args.postal_code)
    except BusinessError as exception:
        print(f'crm: {exception}', file=sys.stderr)
        return 1
    os.environ['TRYTOND_CONFIG'] = args.config
    from trytond.pool import Pool
    Pool(args.database).init()
    name = in_transaction(args.database, lambda: set_up(business).rec_name)
    print(f'Company "{name}" is set up.')
    return 0


def in_transaction(database, work):
    """work() in one committed transaction as the root user, started
    again with the tables it must lock when it asks for one (Tryton locks
    a table only from the start of a transaction); returns its result."""
    from trytond.transaction import Transaction, TransactionError
    extras = {}
    while True:
        try:
            with Transaction().start(database, 0, **extras) as transaction:
                result = work()
                transaction.commit()
                return result
        except TransactionError as error:
            error.fix(extras)

if __name__ == '__main__':
    sys.exit(main())
