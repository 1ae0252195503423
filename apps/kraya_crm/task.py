from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pyson import Eval
from trytond.transaction import Transaction


class Task(Workflow, ModelSQL, ModelView):
    "Something a person has to do for a lead or a deal: a call, a visit."
    __name__ = 'crm.task'
    __string__ = "Task"
    name = fields.Char("Task", required=True)
    lead = fields.Many2One('crm.lead', "Lead", ondelete='CASCADE')
    deal = fields.Many2One('crm.deal', "Deal", ondelete='CASCADE')
    owner = fields.Many2One('res.user', "Assigned To")
    due = fields.DateTime("Due")
    notes = fields.Text("Notes")
    state = fields.Selection([
            ('open', "Open"),
            ('done', "Done"),
            ('cancelled', "Cancelled"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.owner, Index.Range()), (t.due, Index.Range()),
                    where=t.state == 'open'),
                Index(t, (t.lead, Index.Range())),
                Index(t, (t.deal, Index.Range())),
                })
        cls._order = [('due', 'ASC NULLS LAST'), ('id', 'ASC')]
        cls._transitions |= {
            ('open', 'done'), ('open', 'cancelled'),
            ('done', 'open'), ('cancelled', 'open'),
            }
        cls._buttons.update({
                'done': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    'icon': 'tryton-ok',
                    },
                'cancel': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    'icon': 'tryton-cancel',
                    },
                'reopen': {
                    'invisible': Eval('state') == 'open',
                    'depends': ['state'],
                    'icon': 'tryton-undo',
                    },
                })

    @staticmethod
    def default_state():
        return 'open'

    @staticmethod
    def default_owner():
        return Transaction().user or None

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def done(cls, tasks):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, tasks):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('open')
    def reopen(cls, tasks):
        pass
