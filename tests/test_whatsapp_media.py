"""WhatsApp media, buttons, quoted replies, read receipts, templates and
marketing opt-outs on the running site: its web and worker processes, the
cron run by trytond-cron, and the Cloud API simulator on the other side."""
import base64
import random

import pytest

from .conftest import eventually
from .rpc import RpcError

PDF = b'%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n' * 20
PNG = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4


def new_number():
    return '91' + random.choice('987') + '%09d' % random.randrange(10 ** 9)


def lead_writing(crm_site, manager, text="Hi, is the flat available?"):
    "A lead who wrote to us on WhatsApp just now (the window is open)."
    number = new_number()
    wamid = crm_site.whatsapp.reply(number, text, name="Farah Khan")['wamid']
    lead = eventually(lambda: manager.search_read('crm.lead',
            [('whatsapp', '=', '+' + number)], ['id']))
    assert lead, "the webhook made no lead"
    return lead[0]['id'], number, wamid


def messages(manager, lead_id, fields, **where):
    return manager.search_read('crm.message', [('lead', '=', lead_id),
            *[(k, '=', v) for k, v in where.items()]], list(fields),
        order=[('id', 'ASC')])


def queue(manager, lead_id, number, **values):
    "An outbound WhatsApp message, queued as the inbox queues one."
    message_id, = manager.model('crm.message', 'create', [{
                'lead': lead_id, 'direction': 'outbound',
                'channel': 'whatsapp', 'status': 'queued', 'kind': 'text',
                'address': '+' + number, **values}])
    return message_id


def sent_to(sim, number):
    return [m for m in sim.sent if m['to'] == number]


def sync_templates(manager):
    "CRM > Configuration > WhatsApp Templates > Sync Templates."
    wizard = 'wizard.crm.whatsapp.template.sync'
    session, _, _ = manager.call(f'{wizard}.create', manager.context)
    try:
        manager.call(f'{wizard}.execute', session, {}, 'sync',
            manager.context)
    finally:
        manager.call(f'{wizard}.delete', session, manager.context)


def test_pdf_is_uploaded_sent_by_id_and_reaches_the_leads_phone(
        crm_site, manager, tick):
    lead_id, number, _ = lead_writing(crm_site, manager)
    attachment_id, = manager.model('ir.attachment', 'create', [{
                'name': 'Powai brochure.pdf', 'type': 'data',
                'resource': f'crm.lead,{lead_id}',
                # Bytes as Tryton's JSON-RPC carries them.
                'data': {'__class__': 'bytes',
                    'base64': base64.b64encode(PDF).decode()}}])
    queue(manager, lead_id, number, kind='document', media=attachment_id,
        body="The Powai brochure")
    tick()
    sent = eventually(lambda: sent_to(crm_site.whatsapp, number), timeout=20)
    assert sent, messages(manager, lead_id, ['status', 'error_message'])
    media = sent[0]['media']
    assert (sent[0]['type'], media['filename'], media['mime_type'],
        media['size'], media['caption']) == ('document', 'Powai brochure.pdf',
        'application/pdf', len(PDF), "The Powai brochure")


def test_reply_is_sent_quoting_and_a_quoting_reply_is_linked(
        crm_site, manager, tick):
    lead_id, number, wamid = lead_writing(crm_site, manager)
    theirs, = messages(manager, lead_id, ['id'], provider_id=wamid)
    ours = queue(manager, lead_id, number, body="Yes, 2 BHK at 1.2 Cr",
        reply_to=theirs['id'])
    tick()
    sent = eventually(lambda: sent_to(crm_site.whatsapp, number), timeout=20)
    assert sent and sent[0]['reply_to'] == wamid
    provider_id = eventually(lambda: manager.model('crm.message', 'read',
            [ours], ['provider_id'])[0]['provider_id'])
    answer = crm_site.whatsapp.reply(number, "Can I visit Sunday?",
        context=provider_id)['wamid']
    quoting = eventually(lambda: messages(manager, lead_id, ['reply_to'],
            provider_id=answer))
    assert quoting[0]['reply_to'] == ours


def test_buttons_go_out_and_more_than_three_are_refused_before(
        crm_site, manager, tick):
    lead_id, number, _ = lead_writing(crm_site, manager)
    with pytest.raises(RpcError) as raised:
        queue(manager, lead_id, number, kind='buttons', body="Pick a day",
            buttons='["Mon", "Tue", "Wed", "Thu"]')
    assert "at most 3 reply buttons" in raised.value.message
    queue(manager, lead_id, number, kind='buttons', body="Pick a day",
        buttons='["Saturday", "Sunday"]')
    tick()
    sent = eventually(lambda: sent_to(crm_site.whatsapp, number), timeout=20)
    assert [(m['type'], m['buttons']) for m in sent] == [
        ('interactive', ["Saturday", "Sunday"])]


def test_marking_a_conversation_read_reaches_whatsapp(crm_site, manager):
    lead_id, number, first = lead_writing(crm_site, manager)
    second = crm_site.whatsapp.reply(number, "Hello?")['wamid']
    received = eventually(lambda: (lambda found: len(found) == 2 and found)(
            messages(manager, lead_id, ['id'], direction='inbound')))
    manager.model('crm.message', 'mark_read_on_whatsapp',
        [m['id'] for m in received])
    # The latest marks the earlier ones read on the lead's phone.
    assert eventually(lambda: second in crm_site.whatsapp.reads), \
        crm_site.whatsapp.reads
    assert first not in crm_site.whatsapp.reads


def test_template_sync_reads_every_page_and_switches_off_the_gone(
        crm_site, manager):
    sim = crm_site.whatsapp
    kept = sim.templates()
    try:
        sim.set_templates([{'name': f'launch_{i}', 'category': 'MARKETING',
                    'body': "Hi {{1}}, launch {{2}}"} for i in range(60)])
        sync_templates(manager)
        names = {t['name']: t for t in manager.search_read(
                'crm.whatsapp.template', [], ['name', 'status', 'category',
                    'parameter_count'])}
        assert {f'launch_{i}' for i in range(60)} <= names.keys()
        assert names['launch_7']['parameter_count'] == 2
        sim.set_templates([{'name': 'launch_7', 'status': 'PAUSED',
                    'category': 'MARKETING', 'body': "Hi {{1}}"}])
        sim.set_templates([t for t in sim.templates()
                if not t['name'].startswith('launch_')
                or t['name'] == 'launch_7'], replace=True)
        sync_templates(manager)
        launch, = manager.search_read('crm.whatsapp.template',
            [('name', 'like', 'launch_%')], ['name', 'status'])
        assert (launch['name'], launch['status']) == ('launch_7', 'PAUSED')
        assert manager.search_count('crm.whatsapp.template', [
                ('name', 'like', 'launch_%'), ('active', '=', False)]) == 59
    finally:
        sim.set_templates(kept, replace=True)
        sync_templates(manager)


def test_lead_image_is_downloaded_into_an_attachment_of_the_lead(
        crm_site, manager):
    lead_id, number, _ = lead_writing(crm_site, manager)
    wamid = crm_site.whatsapp.reply(number, media={'image': {
                'mime_type': 'image/png', 'data': PNG,
                'caption': "The plot"}})['wamid']
    message = eventually(lambda: [m for m in messages(manager, lead_id,
                ['media', 'media_state', 'body'], provider_id=wamid)
            if m['media_state'] == 'fetched'], timeout=20)
    assert message and message[0]['body'] == "The plot"
    attachment, = manager.model('ir.attachment', 'read',
        [message[0]['media']], ['name', 'resource', 'data_size'])
    assert (attachment['name'], attachment['resource'],
        attachment['data_size']) == (f'image-{wamid}.png',
        f'crm.lead,{lead_id}', len(PNG))


def test_failed_download_is_retried_and_an_expired_one_shown(
        crm_site, manager, run_crons):
    lead_id, number, _ = lead_writing(crm_site, manager)
    retried = crm_site.whatsapp.reply(number, media={'document': {
                'mime_type': 'application/pdf', 'data': PDF,
                'filename': 'KYC.pdf', 'fail': 1}})['wamid']
    expired = crm_site.whatsapp.reply(number, media={'image': {
                'mime_type': 'image/jpeg', 'data': b'\xff\xd8\xff' * 9,
                'expired': True}})['wamid']
    fields = ['media_state', 'media_attempts', 'media_error']

    def state(wamid):
        found = messages(manager, lead_id, fields, provider_id=wamid)
        return found[0] if found else {}
    assert eventually(lambda: state(retried).get('media_state') == 'failed',
        timeout=20), state(retried)
    # The retry is a task for a second later; trytond-worker (PostgreSQL)
    # looks at scheduled tasks once a minute, the cron's sweep at once.
    assert eventually(lambda: state(retried).get('media_state') == 'fetched'
        or run_crons('crm.message|fetch_due_media'), timeout=60,
        interval=2), state(retried)
    assert state(retried)['media_attempts'] == 2
    assert eventually(lambda: state(expired).get('media_state') == 'failed',
        timeout=20), state(expired)
    assert "does not exist" in state(expired)['media_error']


def marketing_opt_out(manager, lead_id):
    consents = manager.search_read('crm.lead.consent', [
            ('lead', '=', lead_id), ('channel', '=', 'whatsapp_marketing')],
        ['state', 'opted_out_reason'])
    return consents[0] if consents else None


def test_stop_promotions_stops_marketing_but_utility_templates_go(
        crm_site, manager, tick):
    sync_templates(manager)
    lead_id, number, _ = lead_writing(crm_site, manager)
    crm_site.whatsapp.reply(number, button={'text': "Stop promotions"})
    assert eventually(lambda: (marketing_opt_out(manager, lead_id)
            or {}).get('state') == 'opted_out')
    offer = queue(manager, lead_id, number, kind='template',
        template_name='offer', template_language='en',
        template_parameters='["Farah"]')
    queue(manager, lead_id, number, kind='template',
        template_name='site_visit', template_language='en',
        template_parameters='["Farah", "5 PM"]')
    # One message a recipient a batch: the second waits for a later tick.
    sent = eventually(lambda: tick() or sent_to(crm_site.whatsapp, number),
        timeout=40, interval=1)
    assert [m['template']['name'] for m in sent] == ['site_visit']
    skipped = eventually(lambda: [m for m in messages(manager, lead_id,
                ['id', 'status', 'error_message']) if m['id'] == offer
            and m['status'] == 'skipped'])
    assert "stopped marketing" in skipped[0]['error_message']


def test_user_preferences_stop_and_resume_marketing(crm_site, manager):
    lead_id, number, _ = lead_writing(crm_site, manager)
    crm_site.whatsapp.preferences(number, 'stop')
    assert eventually(lambda: (marketing_opt_out(manager, lead_id)
            or {}).get('state') == 'opted_out')
    crm_site.whatsapp.preferences(number, 'resume')
    assert eventually(lambda: marketing_opt_out(manager, lead_id)['state']
        == 'opted_in')


def test_131050_opts_the_lead_out_of_marketing_only(crm_site, manager, tick):
    sync_templates(manager)
    lead_id, number, _ = lead_writing(crm_site, manager)
    crm_site.whatsapp.fail('+' + number, 131050)
    offer = queue(manager, lead_id, number, kind='template',
        template_name='new_launch_offer', template_language='en',
        template_parameters='["Farah"]')
    tick()
    assert eventually(lambda: manager.model('crm.message', 'read', [offer],
            ['status'])[0]['status'] == 'failed', timeout=20)
    assert marketing_opt_out(manager, lead_id)['state'] == 'opted_out'
    consent = manager.search_read('crm.lead.consent', [
            ('lead', '=', lead_id), ('channel', '=', 'whatsapp')], ['state'])
    assert consent[0]['state'] == 'opted_in'
