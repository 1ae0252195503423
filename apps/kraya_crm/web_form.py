"""Web forms and lead pushes: a website's form, Facebook Lead Ads or
IndiaMART post a person to

    POST /<db>/crm/capture/<capture key>     JSON or form-encoded

and they become a lead of that source (matched on phone, WhatsApp or email,
see capture.py). Each source has its own key, allowed origins (CORS), field
map and consent text; the desk shows a copy-paste HTML snippet.

Bad input is answered 400 with the field that is wrong and stores nothing
(a server push, which nobody will correct by hand, is also kept as a dead
letter); a filled honeypot is answered like a success and stores nothing."""
import html
import json
import logging
import re
import secrets
import string
import urllib.parse

from sql import Null

from trytond.i18n import gettext
from trytond.model import Index, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .contact import InvalidPhone, normalize_email, normalize_phone
from .exceptions import SubmissionRefused, WebFormSettingError
from .http import loads_bounded, public_url, storable_text
from .message import utcnow

logger = logging.getLogger(__name__)

# The lead fields a field map may fill. 'state' is matched to an Indian
# state; 'consent' is the opt-in checkbox.
TARGETS = (
    'name', 'company_name', 'phone', 'whatsapp', 'email', 'city', 'state',
    'campaign', 'notes', 'consent')
# The snippet's own fields, understood by every source whatever its map.
DEFAULT_MAP = {
    **{target: target for target in TARGETS},
    'mobile': 'phone',
    'message': 'notes',
    'utm_campaign': 'campaign',
    }
# Several incoming keys may fill one field: these are joined, the others
# take the first one given.
JOINED = {'name': ' ', 'notes': '\n'}
MAX_LENGTH = {'notes': 5000}
MAX_TEXT = 200
TRUE_WORDS = {'1', 'true', 'yes', 'y', 'on', 'checked', 'agree', 'agreed',
    'accepted'}
# Bots fill every input; people never see this one.
HONEYPOT = 'kraya_hp'
EMAIL = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s]+$')

PRESETS = {
    # A lead as the Graph API returns it (GET /<lead id>) and as Zapier,
    # Make or LeadsBridge forward it: questions in field_data [{name, values}].
    'facebook': {
        'field_data.full_name': 'name',
        'field_data.first_name': 'name',
        'field_data.last_name': 'name',
        'field_data.phone_number': 'phone',
        'field_data.whatsapp_number': 'whatsapp',
        'field_data.email': 'email',
        'field_data.company_name': 'company_name',
        'field_data.city': 'city',
        'field_data.state': 'state',
        'campaign_name': 'campaign',
        },
    # IndiaMART's Push API: {"CODE": 200, "STATUS": "SUCCESS",
    # "RESPONSE": {"SENDER_NAME": ...}}.
    'indiamart': {
        'RESPONSE.SENDER_NAME': 'name',
        'RESPONSE.SENDER_MOBILE': 'phone',
        'RESPONSE.SENDER_EMAIL': 'email',
        'RESPONSE.SENDER_COMPANY': 'company_name',
        'RESPONSE.SENDER_CITY': 'city',
        'RESPONSE.SENDER_STATE': 'state',
        'RESPONSE.SUBJECT': 'notes',
        'RESPONSE.QUERY_MESSAGE': 'notes',
        },
    }
PRESET_NAMES = [
    (None, ""),
    ('facebook', "Facebook Lead Ads"),
    ('indiamart', "IndiaMART"),
    ]
DEFAULT_CONSENT_TEXT = (
    "I agree to be contacted about my enquiry on WhatsApp and by email.")
# Where the route finds the Origin header: trytond refuses any origin not
# in [web] cors before routing, so the capture path takes it aside first.
ORIGIN_ENVIRON = 'kraya_crm.origin'
CAPTURE_PATH = re.compile(r'/crm/capture/[^/]+/?$')

class FieldMapError(ValueError):
    "A field map that cannot be used: an ir.message id and its values."

    def __init__(self, message, **params):
        super().__init__(message)
        self.message, self.params = message, params


class SubmissionError(ValueError):
    """Input we refuse: what is wrong (code), in which incoming field, and
    the values of its message."""

    def __init__(self, code, path, **params):
        super().__init__(f'{code}: {path}')
        self.code, self.field, self.params = code, path, params


def new_capture_key():
    return secrets.token_urlsafe(18)


def preset_text(preset):
    return json.dumps(PRESETS[preset], indent=2) if preset else None


def parse_field_map(text):
    """The {incoming key path: lead field} dict of a field map's JSON text
    ({} when empty). Raises FieldMapError."""
    if not text or not text.strip():
        return {}
    try:
        field_map = json.loads(text)
    except ValueError as exception:
        raise FieldMapError(
            'msg_web_form_field_map_json', error=str(exception))
    if not isinstance(field_map, dict):
        raise FieldMapError('msg_web_form_field_map_object')
    for path, target in field_map.items():
        if not path.strip() or any(not p for p in path.split('.')):
            raise FieldMapError('msg_web_form_field_map_path', path=path)
        if target not in TARGETS:
            raise FieldMapError('msg_web_form_field_map_target',
                path=path, target=target, targets=', '.join(TARGETS))
    return field_map


def effective_map(field_map):
    "The snippet's fields, then the source's own map (which wins)."
    return {**DEFAULT_MAP, **field_map}


MISSING = object()


def lookup(payload, path):
    """The value at a dotted path: dict keys, list indexes, and the
    [{"name": ..., "values": [...]}] lists of Facebook's field_data, where
    a segment picks the item of that name. MISSING when absent."""
    parts = path.split('.')
    value = payload
    while parts:
        if isinstance(value, dict):
            # A key may itself contain dots ("utm.source").
            joined = '.'.join(parts)
            if joined in value:
                return value[joined]
            if parts[0] not in value:
                return MISSING
            value = value[parts.pop(0)]
        elif isinstance(value, list):
            part = parts.pop(0)
            if part.isdigit():
                index = int(part)
                if index >= len(value):
                    return MISSING
                value = value[index]
                continue
            for item in value:
                if isinstance(item, dict) and item.get('name') == part:
                    value = item.get('values', item.get('value'))
                    break
            else:
                return MISSING
        else:
            return MISSING
    return value


def as_text(value, path):
    "A scalar as text; a list of them joined (Facebook's values lists)."
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float) and value.is_integer():
        # 9876543210 sent as a JSON number comes back as 9876543210.0.
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return storable_text(str(value)).strip()
    if isinstance(value, list):
        return ', '.join(filter(None, (as_text(v, path) for v in value)))
    raise SubmissionError('not_text', path, field=path)


def map_payload(payload, field_map):
    """{lead field: (text, incoming path)} of a payload, through the
    effective map; empty values are skipped."""
    parts = {}
    for path, target in effective_map(field_map).items():
        value = lookup(payload, path)
        if value is MISSING:
            continue
        text = as_text(value, path)
        if text:
            parts.setdefault(target, []).append((text, path))
    mapped = {}
    for target, values in parts.items():
        if target in JOINED:
            texts = list(dict.fromkeys(text for text, _ in values))
            mapped[target] = (JOINED[target].join(texts), values[0][1])
        else:
            mapped[target] = values[0]
    return mapped


def clean_submission(mapped):
    """The lead values (phones in E.164, email lower-cased), the state's
    name and whether consent was given. Raises SubmissionError."""
    for target, (text, path) in mapped.items():
        limit = MAX_LENGTH.get(target, MAX_TEXT)
        if len(text) > limit:
            raise SubmissionError('too_long', path, field=path, max=limit)
    values = {t: text for t, (text, _) in mapped.items()
        if t not in {'state', 'consent'}}
    for name in ('phone', 'whatsapp'):
        if name in values:
            try:
                values[name] = normalize_phone(values[name])
            except InvalidPhone:
                raise SubmissionError('invalid_phone', mapped[name][1],
                    phone=values[name])
    if 'email' in values:
        values['email'] = normalize_email(values['email'])
        if not EMAIL.match(values['email']):
            raise SubmissionError('invalid_email', mapped['email'][1],
                email=values['email'])
    if not any(values.get(n) for n in ('phone', 'whatsapp', 'email')):
        raise SubmissionError('missing_contact', 'phone')
    state = mapped['state'][0] if 'state' in mapped else None
    consent = (mapped['consent'][0].strip().lower() in TRUE_WORDS
        if 'consent' in mapped else False)
    return values, state, consent


def parse_body(body, content_type):
    """The submitted dict of a JSON or form-encoded body. Raises
    SubmissionError('invalid_body')."""
    content_type = (content_type or '').split(';')[0].strip().lower()
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError:
        raise SubmissionError('invalid_body', 'body')
    if content_type == 'application/x-www-form-urlencoded':
        return {k: v[0] for k, v in urllib.parse.parse_qs(
                text, keep_blank_values=True).items()}
    if content_type in {'', 'text/plain'} or 'json' in content_type:
        try:
            payload = loads_bounded(text)
        except ValueError:
            raise SubmissionError('invalid_body', 'body')
        if isinstance(payload, dict):
            return payload
    raise SubmissionError('invalid_body', 'body')


def normalize_origin(origin):
    return origin.strip().rstrip('/').lower()


def origin_lines(text):
    return [normalize_origin(line) for line in (text or '').splitlines()
        if line.strip()]


def valid_origin(origin):
    "'*', 'null' or scheme://host[:port] without a path."
    if origin in {'*', 'null'}:
        return True
    parts = urllib.parse.urlsplit(origin)
    return (parts.scheme in {'http', 'https'} and bool(parts.netloc)
        and not parts.path and not parts.query and not parts.fragment)


def origin_allowed(allowed_text, origin, host):
    "Whether a browser page at origin may post (its own site always may)."
    origin = normalize_origin(origin)
    if host and urllib.parse.urlsplit(origin).netloc == host.lower():
        return True
    allowed = origin_lines(allowed_text)
    return '*' in allowed or origin in allowed


SNIPPET = string.Template("""\
<!-- Kraya CRM web form "$source": paste it where the form should appear. -->
<form id="$form_id" action="$action" method="post">
  <p><label>Name<br><input name="name" autocomplete="name" required></label></p>
  <p><label>Mobile<br><input name="phone" type="tel" autocomplete="tel" required></label></p>
  <p><label>Email<br><input name="email" type="email" autocomplete="email"></label></p>
  <p><label>City<br><input name="city" autocomplete="address-level2"></label></p>
  <p><label>Message<br><textarea name="message" rows="3"></textarea></label></p>
  <p style="position:absolute;left:-10000px" aria-hidden="true"><label>Leave this empty <input name="$honeypot" tabindex="-1" autocomplete="off"></label></p>
$consent  <p><button type="submit">Send</button></p>
  <p role="status"></p>
</form>
<script>
(function () {
  var url = $url_js;
  var form = document.getElementById($form_id_js);
  var status = form.querySelector('[role="status"]');
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var data = {};
    new FormData(form).forEach(function (value, key) { data[key] = value; });
    var campaign = new URLSearchParams(window.location.search).get('utm_campaign');
    if (campaign) { data.utm_campaign = campaign; }
    status.textContent = 'Sending...';
    fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(data)})
      .then(function (response) {
        return response.json().then(function (answer) {
          if (response.ok) {
            form.reset();
            status.textContent = 'Thank you! We will get in touch soon.';
          } else {
            status.textContent = answer.message || 'Please check the form and try again.';
          }
        });
      })
      .catch(function () {
        status.textContent = 'Could not send. Please try again in a minute.';
      });
  });
})();
</script>
""")
CONSENT_CHECKBOX = string.Template(
    '  <p><label><input type="checkbox" name="consent" value="yes"> '
    '$text</label></p>\n')


def render_snippet(url, form_id, source_name, consent_text):
    "The HTML form and script a website pastes to post leads to url."
    return SNIPPET.substitute(
        source=html.escape(source_name or '').replace('--', '- -'),
        form_id=html.escape(form_id), form_id_js=json.dumps(form_id),
        action=html.escape(url), url_js=json.dumps(url),
        honeypot=HONEYPOT,
        consent=CONSENT_CHECKBOX.substitute(text=html.escape(consent_text))
        if consent_text else '')


class Source(metaclass=PoolMeta):
    __name__ = 'crm.source'
    web_form = fields.Boolean("Web Form",
        help="Accept leads posted to this source's capture URL.")
    capture_key = fields.Char("Capture Key", readonly=True, strip=False,
        help="The secret part of the capture URL. Regenerate it when the "
        "URL leaked; then update the snippet and pushes.")
    capture_url = fields.Function(fields.Char("Capture URL",
            states={'invisible': ~Eval('web_form')},
            help="Where websites, Facebook (through Zapier or Make) or "
            "IndiaMART post leads: JSON or form-encoded."),
        'get_capture_url')
    allowed_origins = fields.Text("Allowed Origins",
        help="The websites whose pages may post the form, one per line "
        "(e.g. https://www.example.in); * for any. Pushes from servers "
        "need none.")
    field_map_preset = fields.Selection(PRESET_NAMES, "Preset",
        help="Fills the field map for a known sender.")
    field_map = fields.Text("Field Map",
        help='JSON: incoming key path -> lead field, e.g. '
        '{"RESPONSE.SENDER_MOBILE": "phone"}. Dotted paths reach nested '
        'keys; in a list of {"name", "values"} (Facebook\'s field_data) a '
        'segment picks the item of that name. Lead fields: '
        + ', '.join(TARGETS) + '. The snippet\'s own fields always map.')
    consent_text = fields.Text("Consent Text",
        help="The words next to the form's consent checkbox, recorded as "
        "the basis of the opt-in. Empty: no checkbox.")
    snippet = fields.Function(fields.Text("HTML Snippet",
            states={'invisible': ~Eval('web_form')},
            help="Paste it into a page of the website."),
        'get_snippet')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('capture_key_unique', Unique(t, t.capture_key),
                'kraya_crm.msg_source_capture_key_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.capture_key, Index.Equality())))
        cls._buttons.update({
                'regenerate_key': {
                    'icon': 'tryton-refresh',
                    },
                })

    @classmethod
    def __register__(cls, module):
        super().__register__(module)
        # Sources made before web forms existed get their key now.
        cursor = Transaction().connection.cursor()
        t = cls.__table__()
        cursor.execute(*t.select(t.id, where=t.capture_key == Null))
        for id_, in cursor.fetchall():
            cursor.execute(*t.update([t.capture_key], [new_capture_key()],
                    where=t.id == id_))

    @staticmethod
    def default_web_form():
        return False

    @staticmethod
    def default_consent_text():
        return DEFAULT_CONSENT_TEXT

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'create' and not values.get('capture_key'):
            values['capture_key'] = new_capture_key()
        if values.get('field_map_preset') and not values.get('field_map'):
            values['field_map'] = preset_text(values['field_map_preset'])
        return values

    @classmethod
    def copy(cls, sources, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('capture_key', None)
        return super().copy(sources, default=default)

    @fields.depends('field_map_preset')
    def on_change_field_map_preset(self):
        if self.field_map_preset:
            self.field_map = preset_text(self.field_map_preset)

    @classmethod
    @ModelView.button
    def regenerate_key(cls, sources):
        for source in sources:
            source.capture_key = new_capture_key()
        cls.save(sources)

    @classmethod
    def validate_fields(cls, sources, field_names):
        super().validate_fields(sources, field_names)
        if field_names is None or 'field_map' in field_names:
            for source in sources:
                source.check_field_map()
        if field_names is None or 'allowed_origins' in field_names:
            for source in sources:
                source.check_allowed_origins()

    def check_field_map(self):
        try:
            parse_field_map(self.field_map)
        except FieldMapError as exception:
            raise WebFormSettingError(gettext(
                    f'kraya_crm.{exception.message}',
                    source=self.rec_name, **exception.params))

    def check_allowed_origins(self):
        for origin in origin_lines(self.allowed_origins):
            if not valid_origin(origin):
                raise WebFormSettingError(gettext(
                        'kraya_crm.msg_web_form_origin_invalid',
                        source=self.rec_name, origin=origin))

    @property
    def web_form_map(self):
        "The source's field map; one that no longer parses maps nothing."
        try:
            return parse_field_map(self.field_map)
        except FieldMapError:
            logger.warning("Field map of source %s is invalid", self.id)
            return {}

    def get_capture_url(self, name):
        if not self.capture_key:
            return None
        base = public_url()
        database = urllib.parse.quote(Transaction().database.name)
        return f'{base}/{database}/crm/capture/{self.capture_key}'

    def get_snippet(self, name):
        url = self.get_capture_url('capture_url')
        if not url:
            return None
        form_id = 'kraya-form-' + re.sub(r'[^a-z0-9-]', '-',
            (self.code or str(self.id)).lower())
        return render_snippet(url, form_id, self.name, self.consent_text)

    @classmethod
    def by_capture_key(cls, key):
        "The active web-form source with this key, or None."
        sources = cls.search([
                ('capture_key', '=', key),
                ('web_form', '=', True),
                ], limit=1)
        return sources[0] if sources else None

    def capture_submission(self, payload):
        """Make or match the lead of a submitted dict, record the opt-in and
        put the submission on the lead's timeline. Returns (lead, created).
        Raises SubmissionError."""
        pool = Pool()
        Lead = pool.get('crm.lead')
        Message = pool.get('crm.message')
        values, state, consent = clean_submission(
            map_payload(payload, self.web_form_map))
        if state:
            subdivision = self.indian_state(state)
            if subdivision:
                values['subdivision'] = subdivision.id
            else:
                # An unknown state is kept where a rep will read it.
                values['notes'] = '\n'.join(filter(None, [
                            values.get('notes'), f"State: {state}"]))
        (lead, created), = Lead.capture([values], source=self)
        if lead is None:
            # Erased on their request: answered as any submission, and
            # nothing stored (Returns (None, False)).
            return None, False
        lead = Lead(lead.id)
        if consent and self.consent_text:
            channels = ['whatsapp'] if (values.get('phone')
                or values.get('whatsapp')) else []
            if values.get('email'):
                channels.append('email')
            for channel in channels:
                Lead.opt_in([lead], channel, 'form', basis=self.consent_text)
        Message.save([Message(lead=lead, deal=lead.open_deal,
                    direction='inbound', channel='web', status='received',
                    at=utcnow(), kind='web_form',
                    address=values.get('email') or values.get('phone')
                    or values.get('whatsapp'),
                    body=self.submission_text(values, state))])
        return lead, created

    def replay_submission(self, body):
        """Capture a kept body again (a dead letter's replay), JSON or
        form-encoded; still wrong, it is refused with the same message."""
        try:
            try:
                payload = parse_body(body, 'application/json')
            except SubmissionError:
                payload = parse_body(
                    body, 'application/x-www-form-urlencoded')
            return self.capture_submission(payload)
        except SubmissionError as exception:
            raise SubmissionRefused(gettext(
                    SUBMISSION_MESSAGES[exception.code], **exception.params))

    def submission_text(self, values, state):
        "What was sent, for the timeline: a known lead keeps its fields."
        labels = [("Name", values.get('name')),
            ("Company", values.get('company_name')),
            ("Phone", values.get('phone')),
            ("WhatsApp", values.get('whatsapp')),
            ("Email", values.get('email')),
            ("City", values.get('city')),
            ("State", state),
            ("Campaign", values.get('campaign'))]
        lines = [f"{self.name}:"] + [f"{label}: {value}"
            for label, value in labels if value]
        if values.get('notes'):
            lines += ['', values['notes']]
        return '\n'.join(lines)

    @staticmethod
    def indian_state(text):
        "The Indian state named or coded (Maharashtra, MH, IN-MH), or None."
        Subdivision = Pool().get('country.subdivision')
        code = text.strip().upper()
        states = Subdivision.search([
                ('country.code', '=', 'IN'),
                ('parent', '=', None),
                ['OR',
                    ('name', 'ilike', text.strip()),
                    ('code', 'in', [code, f'IN-{code}']),
                    ],
                ], limit=1)
        return states[0] if states else None


SUBMISSION_MESSAGES = {
    'invalid_body': 'kraya_crm.msg_web_form_invalid_body',
    'invalid_phone': 'kraya_crm.msg_invalid_phone',
    'invalid_email': 'kraya_crm.msg_web_form_invalid_email',
    'missing_contact': 'kraya_crm.msg_web_form_missing_contact',
    'too_long': 'kraya_crm.msg_web_form_too_long',
    'not_text': 'kraya_crm.msg_web_form_not_text',
    }
