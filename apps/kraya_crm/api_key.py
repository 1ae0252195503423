"""API keys: how another tool (n8n, Zapier, Make) signs in to the
integration API (api.py). A key acts as one Tryton user, so that user's
groups and record rules decide what it reaches, narrowed by the key's
scopes. Only the SHA-256 of a key is stored: the administrator sees the key
once, when the wizard makes it, and a lost key is revoked and replaced, not
recovered. A key is random (secrets.token_urlsafe, 256 bits), so one round
of SHA-256 is enough; a password's slow hash would only slow every call."""
import datetime as dt
import hashlib
import hmac
import secrets

from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .message import utcnow

# Recognisable in a leaked log or a secret scanner's rules.
PREFIX = 'kraya_'
# What the start of a key shows in the desk to tell keys apart.
VISIBLE = len(PREFIX) + 6
SCOPES = [
    ('leads:read', "Read leads"),
    ('leads:write', "Create and update leads"),
    ('deals:read', "Read deals"),
    ('deals:write', "Move deals' stages"),
    ('tasks:write', "Add tasks and notes"),
    ]
# Last use is written at most this often per key: not on every call.
LAST_USED_EVERY = dt.timedelta(minutes=1)


def key_hash(key):
    return hashlib.sha256(key.encode('utf-8')).hexdigest()


def new_key():
    return PREFIX + secrets.token_urlsafe(32)


class ApiKey(Workflow, ModelSQL, ModelView):
    "A key an integration signs in to the API with, acting as one user."
    __name__ = 'crm.api.key'
    __string__ = "API Key"
    name = fields.Char("Integration", required=True,
        help="What uses the key, e.g. n8n or the website.")
    user = fields.Many2One('res.user', "Acts As", required=True,
        ondelete='RESTRICT',
        states={'readonly': Eval('state') != 'active'},
        help="The API reads and writes as this user: their groups and "
        "record rules apply.")
    scopes = fields.MultiSelection(SCOPES, "Scopes",
        states={'readonly': Eval('state') != 'active'},
        help="What the key may do, within what its user may do.")
    key_start = fields.Char("Key Starts With", readonly=True,
        help="The start of the key, to tell keys apart; the rest is not kept.")
    key_hash = fields.Char("Key Hash", readonly=True)
    state = fields.Selection([
            ('active', "Active"),
            ('revoked', "Revoked"),
            ], "State", required=True, readonly=True, sort=False)
    revoked_at = fields.Timestamp("Revoked At", readonly=True)
    revoked_by = fields.Many2One('res.user', "Revoked By", readonly=True)
    last_used_at = fields.Timestamp("Last Used", readonly=True,
        help="Updated at most once a minute.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('key_hash_unique', Unique(t, t.key_hash),
                'kraya_crm.msg_api_key_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.key_hash, Index.Equality())))
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {('active', 'revoked')}
        cls._buttons.update({
                'revoke': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    'icon': 'tryton-cancel',
                    },
                })

    @staticmethod
    def default_state():
        return 'active'

    @classmethod
    def issue(cls, name, user, scopes):
        """A new key: (the record, the key itself, to be shown once). Made
        here only: the desk's New is refused (access), the wizard calling
        this is the administrators'."""
        key = new_key()
        with without_check_access():
            record, = cls.create([{
                        'name': name,
                        'user': user,
                        'scopes': list(scopes),
                        'key_start': key[:VISIBLE],
                        'key_hash': key_hash(key),
                        }])
        return record, key

    @classmethod
    @ModelView.button
    @Workflow.transition('revoked')
    def revoke(cls, keys):
        cls.write(keys, {
                'revoked_at': utcnow(),
                'revoked_by': Transaction().user or None,
                })

    @classmethod
    def authenticate(cls, key):
        """The active key record of this key, or None: looked up by its
        hash, which is compared again in constant time."""
        if not key or not key.startswith(PREFIX) or len(key) > 200:
            return None
        digest = key_hash(key)
        found = cls.search([
                ('key_hash', '=', digest),
                ('state', '=', 'active'),
                ], limit=1)
        if not found or not hmac.compare_digest(found[0].key_hash, digest):
            return None
        return found[0]

    def use_is_stale(self):
        "Whether the last use shown is over a minute old (note_use writes)."
        return (not self.last_used_at
            or utcnow() - self.last_used_at >= LAST_USED_EVERY)

    def note_use(self):
        """last_used_at now: one UPDATE, past the model's write (no
        write_date, no access check), at most once a minute a key."""
        table = self.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update([table.last_used_at], [utcnow()],
                where=table.id == self.id))


class CreateStart(ModelView):
    "What the new key is for, the user it acts as and what it may do."
    __name__ = 'crm.api.key.create.start'
    name = fields.Char("Integration", required=True)
    user = fields.Many2One('res.user', "Acts As", required=True)
    scopes = fields.MultiSelection(SCOPES, "Scopes")


class CreateDone(ModelView):
    "The new key, shown this once."
    __name__ = 'crm.api.key.create.done'
    key = fields.Char("API Key", readonly=True,
        help="Copy it now: only its hash is kept, it will not be shown again.")
    api_key = fields.Many2One('crm.api.key', "Saved As", readonly=True)


class Create(Wizard):
    "Create API Key"
    __name__ = 'crm.api.key.create'
    start = StateView('crm.api.key.create.start',
        'kraya_crm.api_key_create_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Create", 'create_key', 'tryton-ok', default=True),
            ])
    create_key = StateTransition()
    done = StateView('crm.api.key.create.done',
        'kraya_crm.api_key_create_done_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def transition_create_key(self):
        ApiKey = Pool().get('crm.api.key')
        record, key = ApiKey.issue(
            self.start.name, self.start.user, self.start.scopes or [])
        self.done.key = key
        self.done.api_key = record
        return 'done'

    def default_done(self, fields):
        return {'key': self.done.key, 'api_key': self.done.api_key.id}
