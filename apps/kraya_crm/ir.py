from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction


class Rule(metaclass=PoolMeta):
    "Give record rules the user and their sales teams, for ownership rules."
    __name__ = 'ir.rule'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.domain.help += (
            '\n- "user_id" as the id of the current user'
            '\n- "crm_teams" as list of ids of the sales teams of the user')

    @classmethod
    def _get_cache_key(cls, model_names):
        key = super()._get_cache_key(model_names)
        return (*key, Transaction().user, cls._crm_teams())

    @classmethod
    def _get_context(cls, model_name):
        context = super()._get_context(model_name)
        context['user_id'] = Transaction().user
        context['crm_teams'] = list(cls._crm_teams())
        return context

    @classmethod
    def _crm_teams(cls):
        pool = Pool()
        User = pool.get('res.user')
        return User.get_crm_teams()
