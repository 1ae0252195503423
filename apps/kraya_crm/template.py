"""Message templates of follow-up steps: {lead.name}, {owner.name},
{deal.value}... Only the variables listed here exist, each a plain value
read from the record, so a template can neither reach other attributes
(str.format would let "{lead.__class__}" through) nor run code."""
import functools
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


@functools.lru_cache(maxsize=256)
def _parts(text):
    """The text split into its plain pieces and its variables, as (kind,
    getter) pairs (an unknown one renders empty: left out), once per text:
    the engine renders the same few texts for thousands of leads a tick."""
    parts, start = [], 0
    for match in VARIABLE.finditer(text):
        kind, name = match.groups()
        parts.append(text[start:match.start()])
        getter = VARIABLES.get(kind, {}).get(name)
        if getter:
            parts.append((kind, getter))
        start = match.end()
    parts.append(text[start:])
    return tuple(p for p in parts if p != '')


def render(text, lead, deal=None):
    """text with its variables replaced by the values of the lead, its
    owner, the deal and the company; a missing value renders empty."""
    if not text:
        return ''
    # Looked up only when the text names them: most texts are about the
    # lead alone.
    records = {
        'lead': lambda: lead,
        'owner': lambda: lead.owner,
        'deal': lambda: deal,
        'company': lambda: lead.company,
        }
    pieces = []
    for part in _parts(text):
        if part.__class__ is str:
            pieces.append(part)
            continue
        kind, getter = part
        record = records[kind]()
        if record is not None:
            result = getter(record)
            if result is not None:
                pieces.append(str(result))
    return ''.join(pieces)
