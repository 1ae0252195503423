"""Follow-up sequences end to end: the running site, its worker, the WhatsApp
Cloud API simulator and a real SMTP server. A lead writes on WhatsApp, is
enrolled, gets step 1 on WhatsApp and step 2 by email, replies, and the
sequence stops with a task for the owner."""
import os
import random
import signal
import subprocess

import pytest

from kraya_site import sites

from .conftest import TEST_DATABASE, eventually, stop_group

ALWAYS = {
    'business_days': ['0', '1', '2', '3', '4', '5', '6'],
    'business_hours_start': {'__class__': 'time', 'hour': 0, 'minute': 0,
        'second': 0, 'microsecond': 0},
    'business_hours_end': {'__class__': 'time', 'hour': 23, 'minute': 59,
        'second': 59, 'microsecond': 0},
    }
SENT = ('sent', 'delivered', 'read')


@pytest.fixture
def sequence(manager):
    """Make a sequence (steps: dicts of crm.sequence.step values) that may
    send at any hour, optionally the one of a lead source; switched off
    and the source's own sequence put back afterwards."""
    made, hooked = [], []

    def make(steps, source=None, **values):
        sequence_id, = manager.model('crm.sequence', 'create', [{
                    'name': f"Follow-up {random.randrange(10 ** 6)}",
                    **ALWAYS, **values,
                    'steps': [['create', [{'name': f"Step {i}", 'delay': 0,
                                    'delay_unit': 'minutes', **step}
                                for i, step in enumerate(steps, 1)]]],
                    }])
        made.append(sequence_id)
        if source:
            found, = manager.search_read('crm.source',
                [('code', '=', source)], ['follow_up_sequence'])
            manager.model('crm.source', 'write', [found['id']],
                {'follow_up_sequence': sequence_id})
            hooked.append(found)
        return sequence_id
    yield make
    for found in reversed(hooked):
        manager.model('crm.source', 'write', [found['id']],
            {'follow_up_sequence': found['follow_up_sequence']})
    manager.model('crm.sequence', 'write', made, {'active': False})


def new_number():
    return '91' + random.choice('987') + '%09d' % random.randrange(10 ** 9)


def lead_of(manager, number):
    leads = manager.search_read('crm.lead',
        [('whatsapp', '=', '+' + number)], ['name', 'owner'])
    return leads[0] if leads else None


def enrollment_of(manager, lead_id, sequence_id):
    enrollments = manager.search_read('crm.enrollment',
        [('lead', '=', lead_id), ('sequence', '=', sequence_id)],
        ['state', 'stop_reason', 'next_step'])
    return enrollments[0] if enrollments else None


def outbound(manager, lead_id, fields=('status', 'kind', 'channel', 'body',
            'error_code', 'error_message', 'attempts', 'provider_id')):
    return manager.search_read('crm.message',
        [('lead', '=', lead_id), ('direction', '=', 'outbound')], list(fields),
        order=[('id', 'ASC')])


def new_opted_in_lead(manager, source=None, **values):
    "A lead typed in by staff, with a WhatsApp opt-in recorded by them."
    number = new_number()
    source_ids = manager.search('crm.source',
        [('code', '=', source)]) if source else [None]
    lead_id, = manager.model('crm.lead', 'create', [{
                'name': "Meena Joshi", 'phone': '+' + number,
                'source': source_ids[0], **values,
                'consents': [['create', [{'channel': 'whatsapp',
                                'state': 'opted_in',
                                'opted_in_how': 'manual'}]]],
                }])
    return lead_id, number


def test_whatsapp_lead_followed_up_on_whatsapp_then_email_until_reply(
        crm_site, manager, tick, sequence):
    sim, mail = crm_site.whatsapp, crm_site.mail
    sequence_id = sequence([
            {'channel': 'whatsapp_text',
                'body': "Namaste {lead.first_name}, thanks for asking about "
                "our Powai flats."},
            {'channel': 'email', 'subject': "Powai brochure for "
                "{lead.first_name}", 'body': "Dear {lead.name},\n"
                "The brochure <and> price list are attached."},
            ], source='whatsapp')
    number = new_number()
    sim.reply(number, "Hi, is the 2 BHK in Powai available?",
        name="Kiran Mehta")
    lead = eventually(lambda: lead_of(manager, number))
    assert lead, "the inbound message made no lead"
    assert enrollment_of(manager, lead['id'], sequence_id)['state'] == 'active'

    tick()
    first = eventually(lambda: [m for m in sim.sent
            if m['to'] == number], timeout=20)
    assert first, (outbound(manager, lead['id']),
        enrollment_of(manager, lead['id'], sequence_id))
    assert [m['text'] for m in first] == [
        "Namaste Kiran, thanks for asking about our Powai flats."]
    assert eventually(lambda: outbound(manager, lead['id'])[0]['status']
        == 'read'), outbound(manager, lead['id'])

    manager.model('crm.lead', 'write', [lead['id']],
        {'email': 'kiran.mehta@example.in'})
    tick()
    emails = eventually(lambda: mail.sent_to('kiran.mehta@example.in'),
        timeout=20)
    email, = emails
    assert email['Subject'] == "Powai brochure for Kiran"
    assert email['List-Unsubscribe']
    html = email.get_body(('html',)).get_content()
    assert "&lt;and&gt;" in html and "<and>" not in html
    assert eventually(lambda: outbound(manager, lead['id'])[-1]['status']
        == 'sent')

    sim.reply(number, "Yes, please call me after 6", name="Kiran Mehta")
    assert eventually(lambda: enrollment_of(
            manager, lead['id'], sequence_id)['state'] == 'stopped')
    assert enrollment_of(manager, lead['id'], sequence_id)['stop_reason'] \
        == 'replied'
    task, = manager.search_read('crm.task',
        [('lead', '=', lead['id'])], ['name', 'owner', 'state'])
    assert "replied" in task['name'] and task['state'] == 'open'


def test_outside_24_hour_window_sends_template_or_skips(
        crm_site, manager, tick, sequence):
    sim = crm_site.whatsapp
    sequence([
            {'channel': 'whatsapp_text', 'body': "Hello {lead.name}",
                'template_name': 'site_visit_invite', 'template_language':
                'en', 'template_parameters': '{lead.first_name}'},
            {'channel': 'whatsapp_text', 'body': "Just checking in",
                'delay': 0},
            ], source='walk-in')
    lead_id, number = new_opted_in_lead(manager, source='walk-in')
    tick()
    sent = eventually(lambda: [m for m in sim.sent if m['to'] == number],
        timeout=20)
    assert [(m['type'], m['template']['name']) for m in sent] == [
        ('template', 'site_visit_invite')]
    tick()
    skipped = eventually(lambda: [m for m in outbound(manager, lead_id)
            if m['status'] == 'skipped'], timeout=20)
    assert "24-hour window" in skipped[0]['error_message']


def test_rate_limited_send_backs_off_and_goes_later(
        crm_site, manager, tick, sequence):
    sim = crm_site.whatsapp
    sequence([{'channel': 'whatsapp_template', 'template_name': 'welcome'}],
        source='referral')
    lead_id, number = new_opted_in_lead(manager, source='referral')
    # Three refusals: backed off 1, 2 and 4 s (outbox_retry_seconds), so
    # that the test sees the message waiting between two tries.
    sim.fail('+' + number, 130429, times=3)
    tick()
    retried = eventually(lambda: [m for m in outbound(manager, lead_id)
            if m['error_code'] == '130429' and m['status'] == 'queued'],
        timeout=20)
    assert retried, outbound(manager, lead_id)
    # A retry due within ten seconds has a task queued for its time (the
    # cron wakes the outbox each minute for later ones).
    assert eventually(lambda: tick() or outbound(manager, lead_id)[0][
            'status'] in SENT, timeout=40, interval=1), outbound(
        manager, lead_id)
    message, = outbound(manager, lead_id)
    assert message['attempts'] >= 4
    assert len([m for m in sim.sent if m['to'] == number]) == 1


def test_opted_out_lead_gets_only_the_acknowledgement(
        crm_site, manager, tick, sequence):
    sim = crm_site.whatsapp
    sequence([{'channel': 'whatsapp_text', 'body': "Our new project..."}],
        source='whatsapp')
    number = new_number()
    sim.reply(number, "Hi")
    lead = eventually(lambda: lead_of(manager, number))
    sim.configure(pair_interval=0)
    try:
        sim.reply(number, "STOP")
        acknowledged = eventually(lambda: [m for m in sim.sent
                if m['to'] == number], timeout=20)
        tick()
        skipped = eventually(lambda: [m for m in outbound(manager, lead['id'])
                if m['status'] == 'skipped'], timeout=20)
    finally:
        sim.configure(pair_interval=6)
    assert "opted out" in skipped[0]['error_message']
    assert len(acknowledged) == 1
    assert len([m for m in sim.sent if m['to'] == number]) == 1


def start_worker(crm_site):
    site = crm_site.site
    return subprocess.Popen([sites.bin_path('python'), '-m',
            'kraya_site.worker', '-c', str(site.config_file),
            '-d', site.database], env=site.environ(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def sends_by_message(sim, ids):
    "How many times the simulator got each of our messages."
    counts = dict.fromkeys(ids, 0)
    for sent in sim.sent:
        data = sent.get('biz_opaque_callback_data') or ''
        if data.startswith('kraya:'):
            message_id = int(data.split(':')[1])
            if message_id in counts:
                counts[message_id] += 1
    return counts


def enrol_batch(manager, tick, sequence, count, source):
    sequence([{'channel': 'whatsapp_template', 'template_name': 'welcome'}],
        source=source)
    leads = [new_opted_in_lead(manager, source=source)[0]
        for _ in range(count)]
    tick()
    return [m['id'] for m in manager.search_read('crm.message',
        [('lead', 'in', leads), ('direction', '=', 'outbound')], ['id'])]


def test_worker_killed_mid_batch_loses_nothing_and_records_resends(
        crm_site, manager, tick, sequence):
    sim = crm_site.whatsapp
    worker = crm_site.processes[1]
    sim.configure(response_delay=0.25)
    try:
        ids = enrol_batch(manager, tick, sequence, 24, 'import')
        assert len(ids) == 24
        assert eventually(lambda: sum(sends_by_message(sim, ids).values())
            >= 6, timeout=30)
        # The whole worker, its pool process in the middle of a send too.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        crm_site.processes[1] = worker = start_worker(crm_site)
        # The task the worker died in is gone: the cron wakes the outbox,
        # and once the lease is over the interrupted send goes again.
        tick()
        done = eventually(lambda: all(m['status'] in SENT
                for m in manager.model('crm.message', 'read', ids,
                    ['status'])), timeout=30)
        if not done:
            tick()   # after the lease: the interrupted send goes again
            done = eventually(lambda: all(m['status'] in SENT
                    for m in manager.model('crm.message', 'read', ids,
                        ['status'])), timeout=30)
    finally:
        sim.configure(response_delay=0)
    messages = manager.model('crm.message', 'read', ids,
        ['status', 'attempts'])
    assert done, messages
    counts = sends_by_message(sim, ids)
    assert all(counts[m['id']] >= 1 for m in messages), "a message was lost"
    for message in messages:
        # Every send the provider got is an attempt we recorded.
        assert counts[message['id']] <= message['attempts'], message


@pytest.mark.skipif(not TEST_DATABASE,
    reason="SQLite has one writer: a site runs one worker there")
def test_two_workers_never_take_the_same_message(
        crm_site, manager, tick, sequence):
    sim = crm_site.whatsapp
    second = start_worker(crm_site)
    sim.configure(response_delay=0.05)
    try:
        ids = enrol_batch(manager, tick, sequence, 40, 'website')
        assert eventually(lambda: all(m['status'] in SENT
                for m in manager.model('crm.message', 'read', ids,
                    ['status'])), timeout=60)
    finally:
        sim.configure(response_delay=0)
        stop_group(second)
    assert set(sends_by_message(sim, ids).values()) == {1}
    assert {m['attempts'] for m in manager.model(
                'crm.message', 'read', ids, ['attempts'])} == {1}


def enrol(session, leads, sequence_id):
    """Enrol the leads through the desk's Enrol in a Sequence wizard, as on
    a selection of them; the defaults its first page showed."""
    context = dict(session.context, active_model='crm.lead',
        active_id=leads[0], active_ids=leads)
    wizard, _, _ = session.call('wizard.crm.enrollment.enrol.create', context)
    start = session.call('wizard.crm.enrollment.enrol.execute', wizard, {},
        'start', context)['view']['defaults']
    session.call('wizard.crm.enrollment.enrol.execute', wizard, {'start': {
                'applies_to': 'lead', 'sequence': sequence_id}},
        'enrol', context)
    session.call('wizard.crm.enrollment.enrol.delete', wizard, context)
    return start


def test_rep_enrols_selected_leads_through_the_wizard(crm_site, manager,
        sequence):
    rep = crm_site.login('rep')
    sequence_id = sequence([{'channel': 'task', 'body': "Call {lead.name}"}])
    leads = rep.model('crm.lead', 'create', [
            {'name': "Nikhil Rao", 'phone': '+' + new_number()},
            {'name': "Tanvi Iyer", 'phone': '+' + new_number()}])
    start = enrol(rep, leads, sequence_id)
    assert (start['applies_to'], start['count']) == ('lead', 2)
    enrollments = rep.search_read('crm.enrollment',
        [('lead', 'in', leads)], ['sequence', 'state'])
    assert sorted((e['sequence'], e['state']) for e in enrollments) == [
        (sequence_id, 'active')] * 2


def test_follow_up_whose_step_fails_is_stopped_and_the_others_go_on(
        crm_site, manager, tick, sequence):
    "A step broken in the database (here its condition) fails only its own."
    broken_id = sequence([{'channel': 'whatsapp_text', 'body': "Namaste!"}])
    sound_id = sequence([{'channel': 'whatsapp_text', 'body': "Namaste!"}])
    step_id, = manager.search('crm.sequence.step',
        [('sequence', '=', broken_id)])
    crm_site.sql('UPDATE crm_sequence_step SET "condition" = %s WHERE id = %s',
        ('[["city", "=", ', step_id))
    leads = {}
    for sequence_id in [broken_id, sound_id, broken_id]:
        lead_id, _ = new_opted_in_lead(manager)
        enrol(manager, [lead_id], sequence_id)
        leads.setdefault(sequence_id, []).append(lead_id)
    tick()
    for lead_id in leads[broken_id]:
        enrollment = enrollment_of(manager, lead_id, broken_id)
        assert (enrollment['state'], enrollment['stop_reason']) == (
            'stopped', 'failed')
        skipped, = outbound(manager, lead_id)
        assert skipped['status'] == 'skipped'
        assert 'The step failed' in skipped['error_message']
    sound_lead, = leads[sound_id]
    assert enrollment_of(manager, sound_lead, sound_id)['next_step'] is None
    assert eventually(lambda: outbound(manager, sound_lead)), \
        "the sound follow-up sent nothing"
