from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model import DeactivableMixin, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .contact import InvalidPhone, normalize_phone
from .exceptions import InvalidPhoneError


class Team(DeactivableMixin, ModelSQL, ModelView):
    "A sales team: reps see the unassigned leads and deals of their teams."
    __name__ = 'crm.team'
    __string__ = "Sales Team"
    name = fields.Char("Name", required=True, translate=True)
    manager = fields.Many2One('res.user', "Manager")
    members = fields.Many2Many(
        'crm.team-res.user', 'team', 'user', "Members")

    @classmethod
    def on_modification(cls, mode, teams, field_names=None):
        super().on_modification(mode, teams, field_names=field_names)
        _clear_team_caches()


class TeamMember(ModelSQL):
    __name__ = 'crm.team-res.user'
    __string__ = "Sales Team Member"
    team = fields.Many2One(
        'crm.team', "Team", required=True, ondelete='CASCADE')
    user = fields.Many2One(
        'res.user', "User", required=True, ondelete='CASCADE')

    @classmethod
    def on_modification(cls, mode, members, field_names=None):
        super().on_modification(mode, members, field_names=field_names)
        _clear_team_caches()


def _clear_team_caches():
    pool = Pool()
    User = pool.get('res.user')
    Rule = pool.get('ir.rule')
    User._get_crm_teams_cache.clear()
    Rule._domain_get_cache.clear()


class User(metaclass=PoolMeta):
    __name__ = 'res.user'
    crm_teams = fields.Many2Many(
        'crm.team-res.user', 'user', 'team', "Sales Teams")
    crm_whatsapp = fields.Char("WhatsApp Number",
        help="Where the CRM's alerts and task reminders reach you on "
        "WhatsApp, in E.164 (+919876543210).")
    _get_crm_teams_cache = Cache('res_user.get_crm_teams')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._preferences_fields.append('crm_whatsapp')

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('crm_whatsapp'):
            try:
                values['crm_whatsapp'] = normalize_phone(
                    values['crm_whatsapp'])
            except InvalidPhone:
                raise InvalidPhoneError(gettext(
                        'kraya_crm.msg_invalid_phone',
                        phone=values['crm_whatsapp']))
        return values

    @classmethod
    def get_crm_teams(cls):
        "Return the ids of the active sales teams of the current user."
        pool = Pool()
        Member = pool.get('crm.team-res.user')
        Team = pool.get('crm.team')
        user = Transaction().user
        teams = cls._get_crm_teams_cache.get(user)
        if teams is not None:
            return teams
        member = Member.__table__()
        team = Team.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*member.join(team, condition=member.team == team.id
                ).select(member.team,
                where=(member.user == user) & team.active))
        teams = tuple(sorted(t for t, in cursor))
        return cls._get_crm_teams_cache.set(user, teams)

    def get_default_crm_team(self):
        teams = [t for t in self.crm_teams if t.active]
        return teams[0].id if teams else None
