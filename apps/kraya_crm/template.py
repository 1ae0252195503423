"""Message templates of follow-up steps: {lead.name}, {owner.name},
{deal.value}... Only the variables listed here exist, each a plain value
read from the record, so a template can neither reach other attributes
(str.format would let "{lead.__class__}" through) nor run code."""
import re

from .contact import format_inr

VARIABLE = re.compile(r'\{\s*([a-z_]+)\.([a-z_]+)\s*\}')

VARIABLES = {
    'lead': {
        'name': lambda lead: lead.name,
        'first_name': lambda lead: (lead.name or '').split(' ')[0],
        'company_name': lambda lead: lead.company_name,
        'city': lambda lead: lead.city,
        'phone': lambda lead: lead.phone,
        'email': lambda lead: lead.email,
        'campaign': lambda lead: lead.campaign,
        },
    'owner': {
        'name': lambda user: user.name,
        'email': lambda user: user.email,
        },
    'deal': {
        'title': lambda deal: deal.title,
        'value': lambda deal: format_inr(deal.value)
        if deal.value is not None else None,
        'stage': lambda deal: deal.stage.name if deal.stage else None,
        },
    'company': {
        'name': lambda company: company.party.name,
        },
    }


def unknown_variables(text):
    "The {record.field} names of text that templates do not know."
    return sorted({match.group(0) for match in VARIABLE.finditer(text or '')
            if match.group(2) not in VARIABLES.get(match.group(1), {})})


def render(text, lead, deal=None):
    """text with its variables replaced by the values of the lead, its
    owner, the deal and the company; a missing value renders empty."""
    if not text:
        return ''
    # Looked up only when the text names them: the engine renders
    # thousands of texts a tick, most of them about the lead alone.
    records = {
        'lead': lambda: lead,
        'owner': lambda: lead.owner,
        'deal': lambda: deal,
        'company': lambda: lead.company,
        }

    def value(match):
        kind, name = match.groups()
        getter = VARIABLES.get(kind, {}).get(name)
        record = records[kind]() if kind in records else None
        if getter is None or record is None:
            return ''
        result = getter(record)
        return '' if result is None else str(result)
    return VARIABLE.sub(value, text)
