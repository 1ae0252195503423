"""What the GST scenarios start from: an Indian company set up as
./crm new-site sets it up, and the text of a printed invoice."""
import io
import re
import subprocess
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path

from lxml import etree

from proteus import Model, Report
from trytond.modules.company.tests.tools import create_company, get_company

# Where the printed invoices are kept as pictures, to be looked at.
SCREENSHOTS = Path(__file__).parents[3] / 'tests' / 'screenshots'
# The states the scenarios use, with their GSTIN prefix.
STATES = [('IN-MH', "Maharashtra", '27'), ('IN-KA', "Karnataka", '29'),
    ('IN-GJ', "Gujarat", '24')]
COMPANY_GSTIN = '27AAGCS1234B1ZU'


def create_indian_company(config=None):
    """Shree Ganesh Realty in Mumbai, Maharashtra, in INR, with its GSTIN
    and the Indian accounting of "Set Up Indian Accounting"."""
    Country = Model.get('country.country', config=config)
    Subdivision = Model.get('country.subdivision', config=config)
    Currency = Model.get('currency.currency', config=config)
    Party = Model.get('party.party', config=config)
    india = Country(name="India", code='IN', code3='IND')
    india.save()
    for code, name, gst in STATES:
        Subdivision(country=india, code=code, name=name, type='state',
            gst_state_codes=gst).save()
    rupee = Currency(name="Indian Rupee", code='INR', symbol='₹',
        rounding=Decimal('0.01'), digits=2)
    rupee.save()
    party = Party(name="Shree Ganesh Realty", gst_registration='regular')
    address = party.addresses[0]
    address.street = "Hiranandani Gardens, Powai"
    address.city = "Mumbai"
    address.postal_code = '400076'
    address.country = india
    address.subdivision, = Subdivision.find([('code', '=', 'IN-MH')])
    party.identifiers.new(type='in_vat', code=COMPANY_GSTIN)
    party.save()
    create_company(party, rupee, config=config)
    company = get_company(config=config)
    company.click('set_up_indian_accounting')


def indian_state(code):
    Subdivision = Model.get('country.subdivision')
    state, = Subdivision.find([('code', '=', code)])
    return state


def rendered_text(invoice):
    """The text of the printed GST invoice (PDF or ODT), its spaces
    collapsed, as a reader would search it."""
    extension, content, _, _ = Report('account.invoice.gst').execute(
        [invoice])
    if extension == 'pdf':
        keep_picture(content, f"gst-{invoice.number.replace('/', '-')}")
    return document_text(extension, content)


def keep_picture(pdf, name):
    "tests/screenshots/NAME.png: the first page, as pdftoppm renders it."
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, 'invoice.pdf')
        path.write_bytes(pdf)
        subprocess.run(['pdftoppm', '-png', '-r', '80', '-singlefile',
                str(path), str(SCREENSHOTS / name)], check=True)


def document_text(extension, content):
    if extension == 'pdf':
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, 'invoice.pdf')
            path.write_bytes(content)
            text = subprocess.run(['pdftotext', str(path), '-'],
                capture_output=True, check=True, text=True).stdout
    else:
        with zipfile.ZipFile(io.BytesIO(content)) as odt:
            root = etree.fromstring(odt.read('content.xml'))
        text = ' '.join(' '.join(p.itertext()) for p in root.iter(
                '{urn:oasis:names:tc:opendocument:xmlns:text:1.0}p'))
    return re.sub(r'\s+', ' ', text)
