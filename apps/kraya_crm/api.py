"""The integration API for n8n, Zapier, Make and scripts, under
/<db>/crm/api/v1/, signed in with `Authorization: Bearer <API key>`
(api_key.py). Each call runs in a transaction as the key's user, with
access checked (`_check_access`) as over RPC: that user's groups and record
rules decide what the key reaches, the key's scopes narrow it further.

One table, OPERATIONS, says every operation: its method, path, scope,
query parameters, body schema and answer. The dispatcher reads it to route
and check a request, and openapi() writes the OpenAPI 3.1 document from
it, so the document cannot drift from the code. Every refusal is JSON
{"error", "field", "message"}; nothing a client sends is answered 5xx.

The work is the models' own: a lead is matched or made by Lead.capture
(as web forms and imports are), a deal moves through the board's
move_deal, a note goes on the lead's conversation as the inbox writes it."""
import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal

import jsonschema

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.protocols.wrappers import (
    set_max_request_size, with_pool, with_transaction)
from trytond.transaction import Transaction, TransactionError, check_access
from trytond.wsgi import app
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from .api_key import PREFIX, SCOPES
from .capture import identity_keys
from .contact import InvalidPhone, normalize_email, normalize_phone
from .exceptions import InboxRefusal
from .http import (
    client_ip, json_response, limiter, loads_bounded, read_body, setting,
    storable_text)
from .inbox import MAX_TEXT as NOTE_MAX
from .lead import STATUSES
from .task import KINDS
from .web_form import (
    MAX_LENGTH, MAX_TEXT, SUBMISSION_MESSAGES, SubmissionError,
    clean_submission)

logger = logging.getLogger(__name__)

BASE = '/<database_name>/crm/api/v1'
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_ID = 2 ** 31 - 1
# What trytond lets the body be; api_max_bytes (below it) answers 413.
MAX_REQUEST = 1024 * 1024


class ApiError(Exception):
    "A refusal: the HTTP status, the error code, the field, the message."

    def __init__(self, status, code, message, field=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = (
            status, code, message, field)


def error(status, code, message, field=None, headers=None):
    return json_response({'error': code, 'field': field, 'message': message},
        status=status, headers=headers)


# --- Schemas: what the answers and bodies are, for the code and the doc ---

def nullable(type_, **more):
    return {'type': [type_, 'null'], **more}


ID = {'type': 'integer', 'minimum': 1, 'maximum': MAX_ID}
TIMESTAMP = nullable('string', format='date-time',
    description="UTC, ISO 8601.")
MONEY = {'type': 'string', 'pattern': r'^-?\d+(\.\d+)?$',
    'description': "A decimal amount as a string, e.g. \"500000.00\"."}
USER = nullable('object', required=['id', 'login', 'name'], properties={
        'id': ID, 'login': {'type': 'string'}, 'name': {'type': 'string'}})


def text(max_length, **more):
    return {'type': 'string', 'maxLength': max_length, **more}


SCHEMAS = {
    'Error': {
        'type': 'object',
        'required': ['error', 'field', 'message'],
        'properties': {
            'error': {'type': 'string',
                'description': "A code a program can test."},
            'field': nullable('string',
                description="The parameter or body field at fault."),
            'message': {'type': 'string',
                'description': "What is wrong, for a person."},
            },
        },
    'Lead': {
        'type': 'object',
        'required': ['id', 'name', 'status', 'created_at', 'updated_at'],
        'description': "Fields the key's user may not read are null.",
        'properties': {
            'id': ID,
            'name': {'type': 'string'},
            'company_name': nullable('string'),
            'phone': nullable('string', description="E.164."),
            'whatsapp': nullable('string', description="E.164."),
            'email': nullable('string'),
            'city': nullable('string'),
            'state': nullable('string',
                description="The Indian state's ISO code, e.g. IN-MH."),
            'source': nullable('string', description="The source's code."),
            'campaign': nullable('string'),
            'status': {'type': 'string', 'enum': [s for s, _ in STATUSES]},
            'score': nullable('integer'),
            'owner': USER,
            'notes': nullable('string'),
            'created_at': TIMESTAMP,
            'updated_at': TIMESTAMP,
            },
        },
    'LeadInput': {
        'type': 'object',
        'additionalProperties': False,
        'description': "At least one of phone, whatsapp and email. A lead "
        "already known by one of them gets only its empty fields filled.",
        'properties': {
            'name': text(MAX_TEXT),
            'company_name': text(MAX_TEXT),
            'phone': text(MAX_TEXT,
                description="Any common spelling; stored in E.164 "
                "(India by default)."),
            'whatsapp': text(MAX_TEXT),
            'email': text(MAX_TEXT),
            'city': text(MAX_TEXT),
            'state': text(MAX_TEXT,
                description="An Indian state's name or code (MH, IN-MH)."),
            'source': text(MAX_TEXT,
                description="The code of a lead source (CRM › "
                "Configuration › Lead Sources)."),
            'campaign': text(MAX_TEXT),
            'notes': text(MAX_LENGTH['notes']),
            },
        },
    'LeadUpsert': {
        'type': 'object',
        'required': ['created', 'lead'],
        'properties': {
            'created': {'type': 'boolean'},
            'lead': {'$ref': '#/components/schemas/Lead'},
            },
        },
    'Deal': {
        'type': 'object',
        'required': ['id', 'title', 'stage', 'created_at', 'updated_at'],
        'description': "Fields the key's user may not read are null.",
        'properties': {
            'id': ID,
            'title': {'type': 'string'},
            'lead_id': nullable('integer'),
            'customer': nullable('string'),
            'value': {'oneOf': [MONEY, {'type': 'null'}]},
            'currency': nullable('string'),
            'stage': {'$ref': '#/components/schemas/Stage'},
            'expected_close': nullable('string', format='date'),
            'owner': USER,
            'lost_reason': nullable('string'),
            'created_at': TIMESTAMP,
            'updated_at': TIMESTAMP,
            },
        },
    'Stage': {
        'type': 'object',
        'required': ['id', 'name', 'kind', 'probability'],
        'properties': {
            'id': ID,
            'name': {'type': 'string'},
            'kind': {'type': 'string', 'enum': ['open', 'won', 'lost']},
            'probability': nullable('integer'),
            },
        },
    'StageMove': {
        'type': 'object',
        'additionalProperties': False,
        'required': ['stage_id'],
        'properties': {
            'stage_id': ID,
            'lost_reason': text(MAX_LENGTH['notes'],
                description="Required to move into a lost stage."),
            },
        },
    'NoteInput': {
        'type': 'object',
        'additionalProperties': False,
        'required': ['text'],
        'properties': {'text': text(NOTE_MAX, minLength=1)},
        },
    'Note': {
        'type': 'object',
        'required': ['id', 'lead_id', 'text', 'created_at'],
        'properties': {
            'id': ID, 'lead_id': ID, 'text': {'type': 'string'},
            'created_at': TIMESTAMP,
            },
        },
    'TaskInput': {
        'type': 'object',
        'additionalProperties': False,
        'required': ['name'],
        'description': "For a lead or a deal: one of lead_id and deal_id.",
        'properties': {
            'name': text(MAX_TEXT, minLength=1),
            'kind': {'type': 'string', 'enum': [k for k, _ in KINDS]},
            'lead_id': ID,
            'deal_id': ID,
            'due': {'type': 'string', 'format': 'date-time',
                'description': "ISO 8601; without an offset it is UTC."},
            'notes': text(MAX_LENGTH['notes']),
            },
        },
    'Task': {
        'type': 'object',
        'required': ['id', 'name', 'kind', 'state'],
        'properties': {
            'id': ID,
            'name': {'type': 'string'},
            'kind': {'type': 'string', 'enum': [k for k, _ in KINDS]},
            'lead_id': nullable('integer'),
            'deal_id': nullable('integer'),
            'owner': USER,
            'due': TIMESTAMP,
            'notes': nullable('string'),
            'state': {'type': 'string'},
            },
        },
    }


def page_schema(item):
    return {
        'type': 'object',
        'required': ['items', 'next_cursor'],
        'properties': {
            'items': {'type': 'array',
                'items': {'$ref': f'#/components/schemas/{item}'}},
            'next_cursor': nullable('string', description="Pass it as "
                "`cursor` for the next page; null on the last page."),
            },
        }


SCHEMAS['LeadPage'] = page_schema('Lead')
SCHEMAS['DealPage'] = page_schema('Deal')
SCHEMAS['StageList'] = {'type': 'object', 'required': ['items'],
    'properties': {'items': {'type': 'array',
            'items': {'$ref': '#/components/schemas/Stage'}}}}


@dataclass
class Param:
    "A query parameter."
    name: str
    schema: dict
    description: str


PAGE_PARAMS = [
    Param('limit', {'type': 'integer', 'minimum': 1, 'maximum': MAX_LIMIT,
            'default': DEFAULT_LIMIT}, "How many items at most."),
    Param('cursor', text(40), "The next_cursor of the page before."),
    Param('updated_since', {'type': 'string', 'format': 'date-time'},
        "Only those created or changed at or after this time (ISO 8601)."),
    Param('owner', text(MAX_TEXT), "The owner's login."),
    ]
LEAD_PARAMS = PAGE_PARAMS + [
    Param('status', {'type': 'string', 'enum': [s for s, _ in STATUSES]},
        "The lead's status."),
    Param('source', text(MAX_TEXT), "The source's code."),
    Param('phone', text(MAX_TEXT), "A phone or WhatsApp number, however "
        "typed."),
    Param('email', text(MAX_TEXT), "An email address, any case."),
    ]
DEAL_PARAMS = PAGE_PARAMS + [
    Param('stage_id', ID, "The deal's stage."),
    Param('stage_kind', {'type': 'string', 'enum': ['open', 'won', 'lost']},
        "Open, won or lost deals."),
    Param('lead_id', ID, "The deal's lead."),
    ]


@dataclass
class Operation:
    "One operation of the API: routing, checking and documentation."
    method: str
    path: str
    operation_id: str
    summary: str
    scope: str
    handler: object
    answer: str
    status: int = 200
    body: str = None
    params: list = field(default_factory=list)
    statuses: tuple = ()

    @property
    def pattern(self):
        return re.compile(re.sub(r'\{(\w+)\}', r'(?P<\1>\\d{1,10})',
                self.path.lstrip('/')))


# --- Reading records as JSON ---

def iso(value):
    return value.isoformat() + 'Z' if value else None


def readable(model_name, names):
    "The names among these the user may read (field access)."
    access = Pool().get('ir.model.field.access').get_access(
        [model_name])[model_name]
    return [n for n in names if access.get(n, {}).get('read', True)]


def users_json(ids):
    User = Pool().get('res.user')
    return {u.id: {'id': u.id, 'login': u.login, 'name': u.name}
        for u in User.browse({i for i in ids if i})}


LEAD_FIELDS = ['name', 'company_name', 'phone', 'whatsapp', 'email', 'city',
    'subdivision', 'source', 'campaign', 'status', 'score', 'owner', 'notes',
    'create_date', 'write_date']


def leads_json(ids):
    "The leads as the API shows them, read with the user's access."
    pool = Pool()
    Lead = pool.get('crm.lead')
    Subdivision = pool.get('country.subdivision')
    Source = pool.get('crm.source')
    with check_access():
        rows = Lead.read(ids, readable('crm.lead', LEAD_FIELDS))
    users = users_json(r.get('owner') for r in rows)
    states = {s.id: s.code for s in Subdivision.browse(
            {r['subdivision'] for r in rows if r.get('subdivision')})}
    sources = {s.id: s.code for s in Source.browse(
            {r['source'] for r in rows if r.get('source')})}
    return [{
            'id': r['id'],
            **{n: r.get(n) for n in ['name', 'company_name', 'phone',
                    'whatsapp', 'email', 'city', 'campaign', 'status',
                    'score', 'notes']},
            'state': states.get(r.get('subdivision')),
            'source': sources.get(r.get('source')),
            'owner': users.get(r.get('owner')),
            'created_at': iso(r['create_date']),
            'updated_at': iso(r['write_date'] or r['create_date']),
            } for r in rows]


DEAL_FIELDS = ['title', 'lead', 'party', 'value', 'currency', 'stage',
    'expected_close', 'owner', 'lost_reason', 'create_date', 'write_date']


def stage_json(stage):
    return {'id': stage.id, 'name': stage.name, 'kind': stage.kind,
        'probability': stage.probability}


def deals_json(ids):
    pool = Pool()
    Deal = pool.get('crm.deal')
    Stage = pool.get('crm.stage')
    Party = pool.get('party.party')
    Currency = pool.get('currency.currency')
    with check_access():
        rows = Deal.read(ids, readable('crm.deal', DEAL_FIELDS))
    users = users_json(r.get('owner') for r in rows)
    stages = {s.id: stage_json(s) for s in Stage.browse(
            {r['stage'] for r in rows})}
    parties = {p.id: p.rec_name for p in Party.browse(
            {r['party'] for r in rows if r.get('party')})}
    currencies = {c.id: c.code for c in Currency.browse(
            {r['currency'] for r in rows if r.get('currency')})}
    return [{
            'id': r['id'],
            'title': r['title'],
            'lead_id': r.get('lead'),
            'customer': parties.get(r.get('party')),
            'value': str(r['value']) if isinstance(r.get('value'), Decimal)
            else None,
            'currency': currencies.get(r.get('currency')),
            'stage': stages[r['stage']],
            'expected_close': r['expected_close'].isoformat()
            if r.get('expected_close') else None,
            'owner': users.get(r.get('owner')),
            'lost_reason': r.get('lost_reason'),
            'created_at': iso(r['create_date']),
            'updated_at': iso(r['write_date'] or r['create_date']),
            } for r in rows]


def found(model_name, record_id):
    "The record if the user may read it, else 404 (as if it did not exist)."
    Model = Pool().get(model_name)
    with check_access():
        records = Model.search([('id', '=', record_id)])
    if not records:
        raise ApiError(404, 'not_found',
            f"No {Model.__string__.lower()} {record_id} that this key may "
            "read.")
    return records[0]


# --- Parameters ---

def parse_time(value, name):
    "An ISO 8601 time as naive UTC, as Tryton stores timestamps."
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ApiError(422, 'invalid', "Not an ISO 8601 date and time, "
            "e.g. 2026-01-31T09:30:00Z.", field=name)
    if parsed.tzinfo:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def query(request, params):
    "The declared query parameters, checked against their schemas."
    values = {}
    for param in params:
        raw = request.args.get(param.name)
        if raw is None or raw == '':
            continue
        raw = storable_text(raw)
        schema = param.schema
        if schema['type'] == 'integer':
            if not re.fullmatch(r'\d{1,10}', raw) or not (
                    schema.get('minimum', 0) <= int(raw)
                    <= schema.get('maximum', MAX_ID)):
                raise ApiError(422, 'invalid', "Must be an integer from "
                    f"{schema.get('minimum', 0)} to "
                    f"{schema.get('maximum', MAX_ID)}.", field=param.name)
            values[param.name] = int(raw)
        elif 'enum' in schema and raw not in schema['enum']:
            raise ApiError(422, 'invalid',
                f"One of: {', '.join(schema['enum'])}.", field=param.name)
        elif len(raw) > schema.get('maxLength', MAX_TEXT):
            raise ApiError(422, 'too_long', "Too long.", field=param.name)
        elif schema.get('format') == 'date-time':
            values[param.name] = parse_time(raw, param.name)
        else:
            values[param.name] = raw
    return values


def cleaned(value):
    """A JSON value with the NUL characters the database refuses removed;
    a lone surrogate (JSON's "\\ud800"), which no database can store, is
    refused."""
    if isinstance(value, dict):
        return {cleaned(k): cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    if isinstance(value, str):
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            raise ApiError(400, 'invalid_json',
                "The body holds text that is not Unicode.", field='body')
    return storable_text(value)


VALIDATORS = {}


def body(request, schema_name):
    "The JSON body, checked against its schema."
    data = read_body(request, setting('api_max_bytes', 64 * 1024))
    if data is None:
        raise ApiError(413, 'too_large', "The request body is too large.",
            field='body')
    try:
        values = loads_bounded(data)
    except ValueError:
        raise ApiError(400, 'invalid_json', "The body is not JSON (UTF-8).",
            field='body')
    values = cleaned(values)
    if schema_name not in VALIDATORS:
        VALIDATORS[schema_name] = jsonschema.Draft202012Validator(
            SCHEMAS[schema_name])
    problem = jsonschema.exceptions.best_match(
        VALIDATORS[schema_name].iter_errors(values))
    if problem is not None:
        path = [str(p) for p in problem.absolute_path]
        name = '.'.join(path) or None
        if problem.validator == 'required' and isinstance(
                problem.instance, dict):
            missing = [n for n in problem.validator_value
                if n not in problem.instance]
            name = '.'.join(path + missing[:1])
        elif problem.validator == 'additionalProperties' and isinstance(
                problem.instance, dict):
            extra = sorted(set(problem.instance)
                - set(problem.schema.get('properties', {})))
            name = '.'.join(path + extra[:1])
        elif problem.validator == 'type' and not path:
            name = 'body'
        raise ApiError(422, 'invalid', problem.message[:300], field=name)
    return values


def page(Model, domain, values, to_json):
    "A page of the records the user may read, by id, after the cursor."
    limit = values.get('limit', DEFAULT_LIMIT)
    cursor = values.get('cursor')
    if cursor is not None:
        if not re.fullmatch(r'\d{1,10}', cursor):
            raise ApiError(422, 'invalid', "Not a cursor of ours.",
                field='cursor')
        domain = domain + [('id', '>', int(cursor))]
    if 'updated_since' in values:
        since = values['updated_since']
        domain = domain + [['OR', ('write_date', '>=', since),
                ('create_date', '>=', since)]]
    if 'owner' in values:
        domain = domain + [('owner.login', '=', values['owner'])]
    with check_access():
        records = Model.search(domain, order=[('id', 'ASC')], limit=limit)
    ids = [r.id for r in records]
    return {'items': to_json(ids),
        'next_cursor': str(ids[-1]) if len(ids) == limit else None}


# --- Operations ---

def search_leads(request, values):
    Lead = Pool().get('crm.lead')
    domain = []
    if 'status' in values:
        domain.append(('status', '=', values['status']))
    if 'source' in values:
        domain.append(('source.code', '=', values['source']))
    if 'phone' in values:
        try:
            phone = normalize_phone(values['phone'])
        except InvalidPhone:
            raise ApiError(422, 'invalid_phone', gettext(
                    'kraya_crm.msg_invalid_phone', phone=values['phone']),
                field='phone')
        domain.append(['OR', ('phone', '=', phone),
                ('whatsapp', '=', phone)])
    if 'email' in values:
        domain.append(('email', '=', normalize_email(values['email'])))
    return page(Lead, domain, values, leads_json)


def read_lead(request, values, lead_id):
    return leads_json([found('crm.lead', lead_id).id])[0]


def upsert_lead(request, values):
    """Match the person on phone, WhatsApp or email as every channel does
    (Lead.capture), else make the lead. A match the key's user may not
    read is a conflict: it is someone else's lead."""
    pool = Pool()
    Lead = pool.get('crm.lead')
    Source = pool.get('crm.source')
    state = values.pop('state', '').strip()
    source_code = values.pop('source', '').strip()
    try:
        # Blank is not given (clean_submission expects mapped, non-blank
        # text: a blank email would reach its check as None).
        lead_values, _, _ = clean_submission({name: (value, name)
                for name, value in values.items() if value.strip()})
    except SubmissionError as exception:
        raise ApiError(422, exception.code, gettext(
                SUBMISSION_MESSAGES[exception.code], **exception.params),
            field=exception.field)
    if state:
        subdivision = Source.indian_state(state)
        if not subdivision:
            raise ApiError(422, 'unknown_state',
                f"{state!r} is not an Indian state's name or code.",
                field='state')
        lead_values['subdivision'] = subdivision.id
    source = None
    if source_code:
        with check_access():
            source = Source.get_by_code(source_code)
        if source is None:
            raise ApiError(422, 'unknown_source',
                f"No lead source has the code {source_code!r}.",
                field='source')
    known = Lead.find_by_identity(identity_keys(lead_values))
    for lead in known.values():
        with check_access():
            if not Lead.search([('id', '=', lead.id)]):
                raise ApiError(409, 'lead_exists',
                    "This person is already a lead that this key's user "
                    "may not see.")
    with check_access():
        (lead, created), = Lead.capture([lead_values], source=source)
    if lead is None:
        raise ApiError(409, 'erased', "This person asked for their data to "
            "be erased: nothing of them is stored.")
    return {'created': created, 'lead': leads_json([lead.id])[0]}, (
        201 if created else 200)


def add_note(request, values, lead_id):
    "An internal note on the lead's conversation, as the inbox writes it."
    pool = Pool()
    Inbox = pool.get('crm.inbox')
    lead = found('crm.lead', lead_id)
    conversation_id = pool.get('crm.my_day').conversation_of(lead.id)
    conversation = Inbox.conversation(conversation_id, mode='write')
    item = Inbox.add_note(conversation, values['text'])
    # The thread's item id: 'm' and the message's.
    note = pool.get('crm.message')(int(item['id'].lstrip('m')))
    return {'id': note.id, 'lead_id': lead.id, 'text': note.body,
        'created_at': iso(note.create_date)}, 201


def search_deals(request, values):
    Deal = Pool().get('crm.deal')
    domain = []
    if 'stage_id' in values:
        domain.append(('stage', '=', values['stage_id']))
    if 'stage_kind' in values:
        domain.append(('stage.kind', '=', values['stage_kind']))
    if 'lead_id' in values:
        domain.append(('lead', '=', values['lead_id']))
    return page(Deal, domain, values, deals_json)


def read_deal(request, values, deal_id):
    return deals_json([found('crm.deal', deal_id).id])[0]


def list_stages(request, values):
    Stage = Pool().get('crm.stage')
    with check_access():
        stages = Stage.search([])
    return {'items': [stage_json(s) for s in stages]}


def move_deal(request, values, deal_id):
    "The board's move: stage history, required fields and rules as there."
    Board = Pool().get('crm.board')
    deal = found('crm.deal', deal_id)
    move = {'stage': values['stage_id']}
    if values.get('lost_reason'):
        move['fields'] = {'lost_reason': values['lost_reason']}
    Board.move_deal(deal.id, move)
    return deals_json([deal.id])[0]


def add_task(request, values):
    Task = Pool().get('crm.task')
    lead_id, deal_id = values.get('lead_id'), values.get('deal_id')
    if bool(lead_id) == bool(deal_id):
        raise ApiError(422, 'lead_or_deal',
            "Give the task's lead_id or its deal_id (one of them).",
            field='lead_id')
    task_values = {'name': values['name'],
        'kind': values.get('kind') or 'call', 'notes': values.get('notes')}
    if lead_id:
        task_values['lead'] = found('crm.lead', lead_id).id
    else:
        deal = found('crm.deal', deal_id)
        task_values['deal'] = deal.id
        task_values['lead'] = deal.lead.id if deal.lead else None
    if values.get('due'):
        task_values['due'] = parse_time(values['due'], 'due')
    with check_access():
        task, = Task.create([task_values])
        row, = Task.read([task.id], ['name', 'kind', 'lead', 'deal', 'owner',
                'due', 'notes', 'state'])
    return {'id': task.id, 'name': row['name'], 'kind': row['kind'],
        'lead_id': row['lead'], 'deal_id': row['deal'],
        'owner': users_json([row['owner']]).get(row['owner']),
        'due': iso(row['due']), 'notes': row['notes'],
        'state': row['state']}, 201


OPERATIONS = [
    Operation('GET', '/leads', 'searchLeads', "Search leads",
        'leads:read', search_leads, 'LeadPage', params=LEAD_PARAMS),
    Operation('POST', '/leads', 'upsertLead',
        "Create a lead, or fill the empty fields of the lead known by its "
        "phone, WhatsApp number or email", 'leads:write', upsert_lead,
        'LeadUpsert', status=201, body='LeadInput', statuses=(200, 201)),
    Operation('GET', '/leads/{lead_id}', 'readLead', "Read a lead",
        'leads:read', read_lead, 'Lead'),
    Operation('POST', '/leads/{lead_id}/notes', 'addNote',
        "Add an internal note to a lead's timeline", 'tasks:write',
        add_note, 'Note', status=201, body='NoteInput'),
    Operation('GET', '/deals', 'searchDeals', "Search deals",
        'deals:read', search_deals, 'DealPage', params=DEAL_PARAMS),
    Operation('GET', '/deals/{deal_id}', 'readDeal', "Read a deal",
        'deals:read', read_deal, 'Deal'),
    Operation('POST', '/deals/{deal_id}/stage', 'moveDeal',
        "Move a deal to another stage", 'deals:write', move_deal, 'Deal',
        body='StageMove'),
    Operation('GET', '/stages', 'listStages', "List the pipeline stages",
        'deals:read', list_stages, 'StageList'),
    Operation('POST', '/tasks', 'addTask', "Add a task to a lead or a deal",
        'tasks:write', add_task, 'Task', status=201, body='TaskInput'),
    ]

# How the board's and inbox's refusals read here.
REFUSALS = {'not_found': 404, 'not_allowed': 403, 'changed': 409,
    'fields_required': 422, 'bad_stage': 422, 'bad_fields': 422,
    'empty': 422, 'too_long': 422}
REFUSAL_FIELDS = {'bad_stage': 'stage_id', 'fields_required': 'lost_reason',
    'bad_fields': 'lost_reason', 'empty': 'text', 'too_long': 'text'}
ERRORS = {
    400: "The body is not JSON.",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key lacks the scope, or its user the right.",
    404: "No such record that the key may read.",
    409: "A conflict: the person is someone else's lead, or the record "
    "changed meanwhile.",
    413: "The body is too large.",
    422: "A parameter or field that is not valid; `field` names it.",
    429: "Too many requests: wait for Retry-After seconds.",
    503: "Busy: try again.",
    }


# --- Serving ---

def bearer_key(request):
    header = request.headers.get('Authorization', '')
    kind, _, key = header.partition(' ')
    return key.strip() if kind.lower() == 'bearer' else None


@dataclass
class Caller:
    "Who a request is from: the key's id, user and scopes."
    key_id: int
    user_id: int
    scopes: frozenset


@with_transaction(user=0, readonly=True)
def _authenticate(request, pool, key):
    ApiKey = pool.get('crm.api.key')
    record = ApiKey.authenticate(key)
    if record is None or not record.user.active:
        return None, False
    return (Caller(record.id, record.user.id, frozenset(record.scopes or ())),
        record.use_is_stale())


@with_transaction(user=0, readonly=False)
def _note_use(request, pool, key_id):
    pool.get('crm.api.key')(key_id).note_use()


def _call(request, pool, caller, operation, args):
    "The operation in a transaction as the key's user, access checked."
    @with_transaction(user=caller.user_id,
        readonly=operation.method == 'GET',
        context={'_check_access': True})
    def run(request, pool):
        User = pool.get('res.user')
        transaction = Transaction()
        try:
            with transaction.set_context(
                    User.get_preferences(context_only=True)):
                values = query(request, operation.params)
                if operation.body:
                    values = body(request, operation.body)
                result = operation.handler(request, values, *args)
        except ApiError as refusal:
            transaction.rollback()
            return error(refusal.status, refusal.code, refusal.message,
                refusal.field)
        except InboxRefusal as refusal:
            transaction.rollback()
            return error(REFUSALS.get(refusal.code, 422), refusal.code,
                refusal.message, REFUSAL_FIELDS.get(refusal.code))
        except AccessError as exception:
            transaction.rollback()
            return error(403, 'not_allowed', exception.message)
        except UserError as exception:
            # The models' own checks (a required field, a domain...).
            transaction.rollback()
            return error(422, 'refused', exception.message)
        except (backend.DatabaseOperationalError, TransactionError):
            # A concurrent write: with_transaction runs the call again.
            raise
        except backend.DatabaseIntegrityError:
            # Two calls making the same lead at once: the retry matches.
            raise
        status = operation.status
        if isinstance(result, tuple):
            result, status = result
        return json_response(result, status=status)
    return run(request, pool)


def dispatch(request, pool, action):
    ip = client_ip(request)
    if not limiter('api_ip', 'api_ip_rate_limit', 1200).allow(ip):
        return error(429, 'too_many_requests',
            "Too many requests from this address. Try again in a minute.",
            headers={'Retry-After': '60'})
    key = bearer_key(request)
    if not key:
        return error(401, 'unauthorized', "Send the API key as "
            "'Authorization: Bearer kraya_...'.",
            headers={'WWW-Authenticate': 'Bearer'})
    caller, stale = _authenticate(request, pool, key)
    if caller is None:
        logger.info("API call with an unknown or revoked key from %s", ip)
        return error(401, 'unauthorized',
            "Unknown or revoked API key.",
            headers={'WWW-Authenticate': 'Bearer error="invalid_token"'})
    if stale:
        _note_use(request, pool, caller.key_id)
    if not limiter('api_key', 'api_key_rate_limit', 300).allow(
            caller.key_id):
        return error(429, 'too_many_requests',
            "Too many requests with this key. Try again in a minute.",
            headers={'Retry-After': '60'})
    allowed = []
    for operation in OPERATIONS:
        match = operation.pattern.fullmatch(action)
        if not match:
            continue
        allowed.append(operation.method)
        if operation.method != request.method:
            continue
        if operation.scope not in caller.scopes:
            return error(403, 'scope_missing',
                f"This key lacks the scope {operation.scope!r}.")
        args = [int(v) for v in match.groups()]
        if any(not 1 <= v <= MAX_ID for v in args):
            return error(404, 'not_found', "No such record.")
        return _call(request, pool, caller, operation, args)
    if allowed:
        return error(405, 'method_not_allowed',
            f"Use {' or '.join(allowed)}.",
            headers={'Allow': ', '.join(allowed)})
    return error(404, 'not_found', f"No operation at {action!r}; see "
        "openapi.json.")


def _answered(request, pool, action):
    """dispatch, whose failures are answered here in JSON: with_pool would
    ask the JSON body it wrapped for an RPC method and fail again."""
    try:
        return dispatch(request, pool, action)
    except backend.DatabaseOperationalError:
        logger.warning("API %s deferred", request.path, exc_info=True)
        return error(503, 'busy', "Busy. Try again in a moment.",
            headers={'Retry-After': '5'})
    except Exception:
        logger.exception("API %s failed", request.path)
        return error(500, 'server_error', "Something went wrong on the "
            "server; nothing was changed. Try again.")


_served = with_pool(_answered)


class AnyPathConverter(PathConverter):
    """A path of any characters. werkzeug's own stops at a newline (its
    regex's "."), so a path holding one (%0A) matched no route and got
    werkzeug's HTML 404 instead of the API's JSON one."""
    regex = r'[^/][\s\S]*?'


app.url_map.converters['api_path'] = AnyPathConverter


@app.route(f'{BASE}/<api_path:action>',
    methods=['GET', 'POST', 'PUT', 'PATCH', 'DELETE'])
# Also spares trytond trying the Authorization header as a login.
@set_max_request_size(MAX_REQUEST)
def api(request, database_name, action):
    try:
        return _served(request, database_name, action)
    except HTTPException as exception:
        # with_pool's: a database that is not one of the server's.
        if exception.code == 404:
            return error(404, 'not_found', "No such database.")
        raise


# --- The OpenAPI document ---

def openapi(database_name):
    "The OpenAPI 3.1 document of OPERATIONS, as served."
    def json_of(schema_name):
        return {'application/json': {'schema': {
                    '$ref': f'#/components/schemas/{schema_name}'}}}

    paths = {}
    for operation in OPERATIONS:
        answers = {str(status): {'description': "Done.",
                'content': json_of(operation.answer)}
            for status in (operation.statuses or (operation.status,))}
        for status in ERRORS:
            answers[str(status)] = {
                '$ref': f'#/components/responses/E{status}'}
        spec = {
            'operationId': operation.operation_id,
            'summary': operation.summary,
            'description': f"Scope: `{operation.scope}`.",
            'security': [{'apiKey': []}],
            'parameters': [{'name': name, 'in': 'path', 'required': True,
                    'schema': ID}
                for name in re.findall(r'\{(\w+)\}', operation.path)] + [
                {'name': p.name, 'in': 'query', 'required': False,
                    'description': p.description, 'schema': p.schema}
                for p in operation.params],
            'responses': answers,
            }
        if operation.body:
            spec['requestBody'] = {'required': True,
                'content': json_of(operation.body)}
        paths.setdefault(operation.path, {})[operation.method.lower()] = spec
    return {
        'openapi': '3.1.0',
        'info': {
            'title': "Kraya CRM integration API",
            'version': '1.0.0',
            'description': "Leads, deals, notes and tasks for n8n, Zapier, "
            "Make and scripts. Create a key under CRM › Configuration › API "
            "Keys; it acts as its user, whose record rules apply. Scopes: "
            + ', '.join(f'`{s}` ({label})' for s, label in SCOPES) + '.',
            },
        'servers': [{'url': f'/{database_name}/crm/api/v1'}],
        'security': [{'apiKey': []}],
        'paths': paths,
        'components': {
            'securitySchemes': {'apiKey': {'type': 'http', 'scheme': 'bearer',
                    'bearerFormat': f'{PREFIX}...',
                    'description': "An API key: `Authorization: Bearer "
                    f"{PREFIX}...`"}},
            'schemas': SCHEMAS,
            'responses': {f'E{status}': {'description': description,
                    'content': json_of('Error')}
                for status, description in ERRORS.items()},
            },
        }


@app.route(f'{BASE}/openapi.json', methods=['GET'])
@with_pool
def openapi_document(request, pool):
    "Public, as every API's document: it holds no data."
    if not limiter('api_ip', 'api_ip_rate_limit', 1200).allow(
            client_ip(request)):
        return error(429, 'too_many_requests', "Too many requests.",
            headers={'Retry-After': '60'})
    return json_response(openapi(pool.database_name))
