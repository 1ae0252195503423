"""The demo's dashboard tells a story: its won and lost deals were closed
a few weeks after their lead came (the demo moved them all today), each
rep and the team have a monthly target a little above what they usually
win, and the manager and the reps land
on the dashboard when they sign in. Called by demo.load() after
demo_board, with its own random numbers.

Imported after trytond is configured (demo.py's __main__)."""
import datetime as dt
import random
from decimal import ROUND_UP, Decimal

# Who has a target, and who lands on the dashboard after login.
REPS = ['rep', 'rep2']
LANDING = ['manager', 'rep', 'rep2']
# A target is the rep's usual month and this much more, in ₹5 lakh steps.
STRETCH = Decimal('1.2')
STEP = Decimal(500000)


def tell_the_story(team, users, seed=2027):
    rng = random.Random(seed)
    date_closed_deals(rng)
    set_targets(team, users)
    land_on_dashboard(users)


def date_closed_deals(rng):
    """Each won or lost deal was closed 5 to 40 days after its lead came
    (never in the future): its move into the stage is dated so."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Deal = pool.get('crm.deal')
    Lead = pool.get('crm.lead')
    Stage = pool.get('crm.stage')
    History = pool.get('crm.deal.stage_history')
    deal, lead, stage = Deal.__table__(), Lead.__table__(), Stage.__table__()
    history = History.__table__()
    cursor = Transaction().connection.cursor()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None,
        microsecond=0)
    # When each lead came, as the demo back-dated it in SQL (past the
    # records' cache).
    cursor.execute(*deal.join(stage, condition=deal.stage == stage.id
            ).join(lead, 'LEFT', condition=deal.lead == lead.id
            ).select(deal.id, lead.create_date, deal.create_date,
            deal.value, lead.budget,
            where=stage.kind != 'open', order_by=[deal.id]))
    for deal_id, came, made, value, budget in cursor.fetchall():
        if not value and budget:
            # The scoring's past deals were made without lines: worth
            # their lead's budget.
            cursor.execute(*deal.update([deal.value], [budget],
                    where=deal.id == deal_id))
        came = came or made
        if isinstance(came, str):
            came = dt.datetime.fromisoformat(came)
        closed = min(came + dt.timedelta(days=rng.randint(5, 40),
                hours=rng.randint(0, 9)), now - dt.timedelta(hours=1))
        cursor.execute(*history.select(history.id,
                where=history.deal == deal_id,
                order_by=[history.id.desc], limit=1))
        last, = cursor.fetchone()
        cursor.execute(*history.update([history.changed_at], [closed],
                where=history.id == last))
        cursor.execute(*deal.update([deal.stage_entered_at], [closed],
                where=deal.id == deal_id))


def months_so_far(today):
    "The first days of this fiscal year's months up to this one."
    from kraya_crm.fiscal_year import year_start
    first = year_start(today)
    months = []
    while first <= today:
        months.append(first)
        first = (first + dt.timedelta(days=32)).replace(day=1)
    return months


def usual_month(owner=None, team=None):
    """What the deals of an owner or a team won in a month, over the last
    three (in SQL: date_closed_deals wrote the values past the cache)."""
    from sql.aggregate import Sum
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    deal = pool.get('crm.deal').__table__()
    stage = pool.get('crm.stage').__table__()
    since = dt.datetime.now() - dt.timedelta(days=90)
    where = (stage.kind == 'won') & (deal.stage_entered_at >= since)
    if owner:
        where &= deal.owner == owner.id
    if team:
        where &= deal.team == team.id
    cursor = Transaction().connection.cursor()
    cursor.execute(*deal.join(stage, condition=deal.stage == stage.id
            ).select(Sum(deal.value), where=where))
    total, = cursor.fetchone()
    return Decimal(str(total or 0)) / 3


def stretched(amount):
    return max(STEP, (amount * STRETCH / STEP).quantize(Decimal(1),
            rounding=ROUND_UP) * STEP)


def set_targets(team, users):
    """Each rep's target for every month of the fiscal year so far, and
    the team's."""
    from trytond.pool import Pool
    Target = Pool().get('crm.sales.target')
    months = months_so_far(dt.date.today())
    amounts = {login: stretched(usual_month(owner=users[login]))
        for login in REPS}
    team_amount = stretched(usual_month(team=team))
    Target.create([{'user': users[login].id, 'month': month,
                'amount': amount}
            for login, amount in amounts.items() for month in months]
        + [{'team': team.id, 'month': month, 'amount': team_amount}
            for month in months])


def land_on_dashboard(users):
    "The dashboard is the login action of the manager and the reps."
    from trytond.pool import Pool
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    ActionUrl = pool.get('ir.action.url')
    # res.user's actions are ir.action rows, the URL action's parent.
    dashboard = ActionUrl(
        ModelData.get_id('kraya_crm', 'act_dashboard')).action.id
    User.write([users[login] for login in LANDING],
        {'actions': [('add', [dashboard])]})
