"""Webhook bodies we could not use, kept whole so that nothing a provider
sent is lost: admins see why, fix what is wrong and replay them."""
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .capture import capture_company
from .message import utcnow

MAX_KEPT_BYTES = 1024 * 1024


class DeadLetter(ModelSQL, ModelView):
    "A webhook delivery that was refused or failed, kept for inspection."
    __name__ = 'crm.dead_letter'
    __string__ = "Dead Letter"
    _rec_name = 'reason'

    received_at = fields.Timestamp("Received At", required=True, readonly=True)
    endpoint = fields.Char("Endpoint", required=True, readonly=True)
    reason = fields.Char("Reason", required=True, readonly=True)
    remote_addr = fields.Char("From", readonly=True)
    body = fields.Text("Body", readonly=True)
    state = fields.Selection([
            ('new', "New"),
            ('replayed', "Replayed"),
            ('ignored', "Ignored"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.state, Index.Equality(cardinality='low')),
                (t.received_at, Index.Range(order='DESC'))))
        cls._order = [('received_at', 'DESC'), ('id', 'DESC')]
        cls._buttons.update({
                'replay': {
                    'invisible': Eval('state') != 'new',
                    'depends': ['state'],
                    'icon': 'tryton-refresh',
                    },
                'ignore': {
                    'invisible': Eval('state') != 'new',
                    'depends': ['state'],
                    'icon': 'tryton-cancel',
                    },
                })

    @staticmethod
    def default_state():
        return 'new'

    @classmethod
    def keep(cls, endpoint, reason, body, remote_addr=None, once=False):
        """Store a delivery; the body is kept as text, cut at 1 MiB. With
        `once`, a body already waiting here is not stored again: the
        sender delivers a refused body again and again."""
        if isinstance(body, bytes):
            body = body[:MAX_KEPT_BYTES].decode('utf-8', 'replace')
        # Shown as invalid bytes are: the database holds no NUL character.
        body = body.replace('\x00', '\ufffd') if body else body
        reason = reason.replace('\x00', '\ufffd')
        if once:
            waiting = cls.search([
                    ('endpoint', '=', endpoint),
                    ('state', '=', 'new'),
                    ('body', '=', body),
                    ], limit=1)
            if waiting:
                return waiting[0]
        letter, = cls.create([{
                    'received_at': utcnow(),
                    'endpoint': endpoint,
                    'reason': reason[:500],
                    'remote_addr': remote_addr,
                    'body': body,
                    }])
        return letter

    @classmethod
    @ModelView.button
    def replay(cls, letters):
        """Process the kept body again, as if it had just arrived; a body
        still wrong raises the same clear error and stays here."""
        for letter in letters:
            letter.process_again()
        cls.write(letters, {'state': 'replayed'})

    def process_again(self):
        pool = Pool()
        WhatsApp = pool.get('crm.whatsapp.webhook')
        Source = pool.get('crm.source')
        with Transaction().set_context(company=capture_company()):
            if self.endpoint == 'whatsapp':
                WhatsApp.process(WhatsApp.parse(self.body.encode()))
            elif self.endpoint == 'email':
                pool.get('crm.message').receive_email(self.body.encode())
            elif self.endpoint.startswith('web_form:'):
                source = Source.get_by_code(self.endpoint.split(':', 1)[1])
                source.replay_submission(self.body.encode())

    @classmethod
    @ModelView.button
    def ignore(cls, letters):
        cls.write(letters, {'state': 'ignored'})
