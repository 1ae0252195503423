"""The demo's open deals as a pipeline board shows a team at work: each
has been in its stage for some days (its stage history spread over the
past weeks to match), most have a next task (some late), and the leads of
the deals further along asked the price and booked a visit, so their
bands warm up. Called by demo.load() last, with its own random numbers.

Imported after trytond is configured (demo.py's __main__)."""
import datetime as dt
import random

# What the next task of a deal is, by the stage it is in.
NEXT_TASKS = {
    10: [('call', "First call: what are they looking for?"),
        ('whatsapp', "Send the project brochure")],
    20: [('email', "Email the price list"),
        ('call', "Call back about the budget")],
    30: [('site_visit', "Site visit with the family"),
        ('meeting', "Meet at the sales office")],
    40: [('call', "Follow up on the proposal"),
        ('whatsapp', "Share the payment plan")],
    50: [('meeting', "Negotiate the final price"),
        ('call', "Collect the booking amount")],
    }
# What the leads of deals this far along did (scoring events).
EVENTS_FROM_STAGE = [
    (30, 'asked_price', "Asked for the price of the 2 BHK"),
    (40, 'visit_booked', "Site visit done"),
    (40, 'replied_whatsapp', "Replied on WhatsApp"),
    ]


def polish_pipeline(users, seed=2026):
    rng = random.Random(seed)
    from trytond.pool import Pool
    Deal = Pool().get('crm.deal')
    deals = Deal.search([('stage.kind', '=', 'open')],
        order=[('id', 'ASC')])
    spread_stage_history(deals, rng)
    plan_next_tasks(deals, users, rng)
    warm_up_leads(deals, rng)


def spread_stage_history(deals, rng):
    """Each open deal entered its stage 0 to 30 days ago, and each stage
    before it a few days earlier (the demo moved them all today)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Deal = pool.get('crm.deal')
    History = pool.get('crm.deal.stage_history')
    deal_table = Deal.__table__()
    history_table = History.__table__()
    cursor = Transaction().connection.cursor()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None,
        microsecond=0)
    for deal in deals:
        changes = History.search([('deal', '=', deal.id)],
            order=[('id', 'ASC')])
        at = now - dt.timedelta(days=rng.choice([0, 1, 2, 3, 5, 8, 12, 19,
                    30]), hours=rng.randint(0, 9))
        times = [at]
        for _ in changes[1:]:
            at -= dt.timedelta(days=rng.randint(2, 9), hours=rng.randint(0, 9))
            times.append(at)
        times.reverse()
        previous = None
        for change, changed_at in zip(changes, times):
            cursor.execute(*history_table.update(
                    [history_table.changed_at,
                        history_table.time_in_previous],
                    [changed_at, changed_at - previous if previous else None],
                    where=history_table.id == change.id))
            previous = changed_at
        cursor.execute(*deal_table.update(
                [deal_table.stage_entered_at, deal_table.create_date],
                [times[-1], times[0]], where=deal_table.id == deal.id))


def plan_next_tasks(deals, users, rng):
    "Most open deals have their next task, about a quarter of them late."
    from trytond.pool import Pool
    Task = Pool().get('crm.task')
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None,
        microsecond=0)
    tasks = []
    for deal in deals:
        if rng.random() < 0.2:
            continue
        kind, name = rng.choice(NEXT_TASKS.get(deal.stage.sequence,
                NEXT_TASKS[10]))
        late = rng.random() < 0.25
        hours = -rng.randint(3, 72) if late else rng.randint(2, 24 * 8)
        tasks.append(Task(name=name, kind=kind, deal=deal, lead=deal.lead,
                owner=deal.owner or users['rep'],
                due=now + dt.timedelta(hours=hours)))
    Task.save(tasks)


def warm_up_leads(deals, rng):
    """The leads of deals from Qualified on asked the price; from Proposal
    Sent on they also booked a visit and replied on WhatsApp."""
    from trytond.pool import Pool
    Lead = Pool().get('crm.lead')
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    Lead.record_score_events([
            (deal.lead, kind, now - dt.timedelta(hours=rng.randint(2, 96)),
                detail)
            for deal in deals if deal.lead
            for sequence, kind, detail in EVENTS_FROM_STAGE
            if deal.stage.sequence >= sequence])
