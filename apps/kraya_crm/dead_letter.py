"""Webhook bodies we could not use, kept whole so that nothing a provider
sent is lost: admins see why, fix what is wrong and replay them."""
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval

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
    def keep(cls, endpoint, reason, body, remote_addr=None):
        "Store a delivery; the body is kept as text, cut at 1 MiB."
        if isinstance(body, bytes):
            body = body[:MAX_KEPT_BYTES].decode('utf-8', 'replace')
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
        "Process the kept body again, as if it had just arrived."
        pool = Pool()
        WhatsApp = pool.get('crm.whatsapp.webhook')
        replayed = []
        for letter in letters:
            if letter.endpoint == 'whatsapp':
                WhatsApp.process(WhatsApp.parse(letter.body.encode()))
                replayed.append(letter)
        cls.write(replayed, {'state': 'replayed'})

    @classmethod
    @ModelView.button
    def ignore(cls, letters):
        cls.write(letters, {'state': 'ignored'})
