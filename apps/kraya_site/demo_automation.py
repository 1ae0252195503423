"""The demo's automation rules tell three stories a sales team knows:
a proposal nobody answered for three working days gets a follow-up task;
a won deal's customer is thanked and, a week on, asked for a referral;
an IndiaMART enquiry with a budget over ₹10 lakh is tagged Hot and goes
to the senior rep, Rahul, with a call due within the hour. Written last,
so that loading the demo fires none of them. Called by demo.load().

Imported after trytond is configured (demo.py's __main__)."""
from decimal import Decimal

BIG_BUDGET = Decimal(1000000)


def write_the_rules(users):
    from trytond.pool import Pool
    pool = Pool()
    Rule = pool.get('crm.automation.rule')
    Stage = pool.get('crm.stage')
    Source = pool.get('crm.source')
    Tag = pool.get('crm.tag')
    Team = pool.get('crm.team')
    proposal, = Stage.search([('name', '=', "Proposal Sent")])
    won, = Stage.search([('kind', '=', 'won')])
    team, = Team.search([], limit=1)
    indiamart, = Source.create([{'name': "IndiaMART", 'code': 'indiamart',
                'team': team.id}])
    hot, = Tag.create([{'name': "Hot"}])
    thank_you = thank_you_sequence()
    Rule.create([{
                'name': "Proposal idle 3 days: follow-up task",
                'applies_to': 'crm.deal', 'trigger': 'idle',
                # Three working days of the 10:00-19:00 calendar.
                'idle_hours': 27,
                'condition': f'[["stage", "=", {proposal.id}]]',
                'actions': [('create', [{
                                'kind': 'create_task', 'task_kind': 'call',
                                'task_name': "Follow up on the proposal",
                                'due_in_hours': 2,
                                'text': "{lead.name} has not answered the "
                                "proposal for {deal.title} in 3 days."}])],
                }, {
                'name': "Deal won: thank you, then ask for a referral",
                'applies_to': 'crm.deal', 'trigger': 'stage_entered',
                'stage': won.id,
                'actions': [('create', [{
                                'kind': 'enrol',
                                'follow_up': thank_you.id}])],
                }, {
                'name': "IndiaMART over ₹10 lakh: Hot, to Rahul",
                'applies_to': 'crm.lead', 'trigger': 'created',
                'condition': f'[["source", "=", {indiamart.id}], '
                f'["budget", ">", {BIG_BUDGET}]]',
                'actions': [('create', [{
                                'sequence': 10, 'kind': 'add_tag',
                                'tag': hot.id,
                                }, {
                                'sequence': 20, 'kind': 'assign',
                                'user': users['rep'].id,
                                }, {
                                'sequence': 30, 'kind': 'create_task',
                                'task_kind': 'call',
                                'task_name': "Call the big IndiaMART enquiry",
                                'due_in_hours': 1,
                                }])],
                }])


def thank_you_sequence():
    "A thank-you the day after the win, a referral ask a week on."
    from trytond.pool import Pool

    from .demo import follow_up_steps
    Sequence = Pool().get('crm.sequence')
    sequence, = Sequence.create([{
                'name': "Thank you and referral",
                'steps': follow_up_steps(
                    ("Thank you", 1, 'days', 'email', {
                            'subject': "Thank you, {lead.first_name}",
                            'body': "Dear {lead.name},\n\nThank you for "
                            "choosing {company.name}. {owner.name} is here "
                            "for anything you need as you move in.\n\n"
                            "Warm regards,\n{owner.name}"}),
                    ("Ask for a referral", 7, 'days', 'task', {
                            'body': "Ask {lead.name} whether a friend or "
                            "relative is looking for a home"})),
                }])
    return sequence
