"""The simulator against a public WhatsApp Cloud API client (pywa), and our
own client against both: pywa was written against Meta's servers, so where
it reads the simulator's answers and raises its error classes for the
simulator's errors, the simulator speaks Meta's shapes; where our client
reads the same answers the same way, the simulator and our client agree
on every shape.

pywa talks to https://graph.facebook.com; its httpx session is ours, so
its base URL is pointed at the simulator after the client is made."""
import httpx
import pytest
from pywa import WhatsApp, errors
from pywa.types import Button
from pywa.types.others import Pagination
from pywa.types.templates import TemplateLanguage

from kraya_crm.whatsapp_client import GraphError, WhatsAppClient
from kraya_peers.whatsapp import Simulator

TOKEN = 'contract-token'
NUMBER_ID = '100000000000055'
WABA_ID = '100000000000054'
VERSION = 'v21.0'
LEAD = '919876500011'
PDF = b'%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n'
PNG = b'\x89PNG\r\n\x1a\n' + b'\x02' * 40


@pytest.fixture(scope='module')
def simulator():
    sim = Simulator(access_token=TOKEN, phone_number_id=NUMBER_ID,
        waba_id=WABA_ID, pair_interval=0, statuses=[])
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(simulator):
    simulator.reset()
    simulator.configure(pair_interval=0, statuses=[])
    simulator.open_window(LEAD)
    return simulator


@pytest.fixture
def wa(sim):
    session = httpx.Client(timeout=10)
    client = WhatsApp(phone_id=NUMBER_ID, token=TOKEN, session=session,
        waba_id=WABA_ID, api_version=VERSION[1:])
    session.base_url = f'{sim.url}/{VERSION}'
    yield client
    session.close()


@pytest.fixture
def ours(sim):
    return WhatsAppClient(sim.url, VERSION, NUMBER_ID, TOKEN)


def test_text_is_sent_by_both_with_a_wamid(sim, wa, ours):
    theirs = wa.send_message(to=LEAD, text="Namaste")
    mine = ours.send_text('+' + LEAD, "Namaste")
    assert theirs.id.startswith('wamid.') and mine.provider_id.startswith(
        'wamid.')
    assert [(m['type'], m['text'], m['wamid']) for m in sim.sent] == [
        ('text', "Namaste", theirs.id), ('text', "Namaste", mine.provider_id)]


def test_template_with_parameters_is_the_same_send(sim, wa, ours):
    body = [{'type': 'body', 'parameters': [{'type': 'text', 'text': "Asha"},
                {'type': 'text', 'text': "5 PM"}]}]
    theirs = wa.send_template(to=LEAD, name='site_visit',
        language=TemplateLanguage.ENGLISH, params=body)
    mine = ours.send_template(LEAD, 'site_visit', 'en', ["Asha", "5 PM"])
    assert mine.outcome == 'sent' and theirs.id
    first, second = sim.sent
    assert first['body']['template'] == second['body']['template']
    assert first['template'] == {'name': 'site_visit', 'language': 'en',
        'parameters': ["Asha", "5 PM"]}


def test_document_by_upload_reaches_the_phone_from_both(sim, wa, ours):
    wa.send_document(to=LEAD, document=PDF, filename='brochure.pdf',
        mime_type='application/pdf', caption="Brochure")
    media_id = ours.upload_media(PDF, 'application/pdf', 'brochure.pdf')
    ours.send_media(LEAD, 'document', media_id, caption="Brochure",
        filename='brochure.pdf')
    received = [{k: m['media'][k] for k in ['filename', 'mime_type', 'size',
                'caption']} for m in sim.sent]
    assert received == [{'filename': 'brochure.pdf',
            'mime_type': 'application/pdf', 'size': len(PDF),
            'caption': "Brochure"}] * 2


def test_image_by_upload_from_both(sim, wa, ours):
    wa.send_image(to=LEAD, image=PNG, mime_type='image/png', caption="Plot")
    ours.send_media(LEAD, 'image', ours.upload_media(PNG, 'image/png',
            'plot.png'), caption="Plot")
    assert [(m['type'], m['media']['size'], m['media']['caption'])
        for m in sim.sent] == [('image', len(PNG), "Plot")] * 2


def test_reply_buttons_are_the_same_interactive_message(sim, wa, ours):
    wa.send_message(to=LEAD, text="When can you visit?", buttons=[
            Button(title="Saturday", callback_data='b1'),
            Button(title="Sunday", callback_data='b2')])
    ours.send_buttons(LEAD, "When can you visit?", ["Saturday", "Sunday"])
    assert [(m['type'], m['text'], m['buttons']) for m in sim.sent] == [
        ('interactive', "When can you visit?", ["Saturday", "Sunday"])] * 2


def test_mark_read_is_success_for_both(sim, wa, ours):
    first = sim.reply(LEAD, "Hi")['wamid']
    second = sim.reply(LEAD, "Price?")['wamid']
    assert wa.mark_message_as_read(first)
    ours.mark_read(second)
    assert sim.reads == [first, second]


def test_media_is_uploaded_and_downloaded_alike(sim, wa, ours):
    theirs = wa.upload_media(media=PDF, mime_type='application/pdf',
        filename='kyc.pdf')
    url = wa.get_media_url(theirs.id)
    assert (url.mime_type, url.file_size) == ('application/pdf', len(PDF))
    assert wa.get_media_bytes(url.url) == PDF
    downloaded = ours.download_media(theirs.id)
    assert (downloaded.data, downloaded.sha256) == (PDF, url.sha256)
    lead_file = sim.reply(LEAD, media={'image': {'mime_type': 'image/png',
                'data': PNG}})['media_id']
    assert wa.get_media_bytes(wa.get_media_url(lead_file).url) \
        == ours.download_media(lead_file).data == PNG


def test_templates_are_listed_page_by_page_alike(sim, wa, ours):
    sim.set_templates([{'name': f'promo_{i}', 'category': 'MARKETING',
                'body': "Hi {{1}}"} for i in range(5)], replace=True)
    # pywa by cursors (its TemplatesResult.next() cannot build its own
    # class in pywa 4.5), ours by paging.next: both reach the end.
    page = wa.get_templates(pagination=Pagination(limit=2))
    names = [t.name for t in page]
    while page.has_next:
        page = wa.get_templates(pagination=Pagination(limit=2,
                after=page.after))
        names.extend(t.name for t in page)
    assert page.total_count == 5
    assert names == [t['name'] for t in ours.templates(WABA_ID, limit=2)] \
        == [f'promo_{i}' for i in range(5)]


@pytest.mark.parametrize('code,error_class,outcome', [
        (131047, errors.ReEngagementMessage, 'reengage'),
        (131026, errors.MessageUndeliverable, 'invalid_number'),
        (131050, errors.UserStoppedMarketingMessages, 'marketing_opt_out'),
        (131049, errors.MessageUndeliverableDueToHealthyEcosystemEngagement,
            'retry'),
        (130429, errors.RateLimitHit, 'retry'),
        ])
def test_injected_errors_raise_pywas_class_and_classify_ours(
        sim, wa, ours, code, error_class, outcome):
    sim.fail(LEAD, code, times=2)
    with pytest.raises(error_class) as raised:
        wa.send_message(to=LEAD, text="Hello")
    result = ours.send_text(LEAD, "Hello")
    assert (raised.value.code, raised.value.type) == (code, 'OAuthException')
    assert raised.value.details and raised.value.fbtrace_id
    assert (result.outcome, result.error_code) == (outcome, str(code))


def test_window_closed_is_131047_for_both(sim, wa, ours):
    sim.open_window(LEAD, open=False)
    with pytest.raises(errors.ReEngagementMessage):
        wa.send_message(to=LEAD, text="Still there?")
    assert ours.send_text(LEAD, "Still there?").error_code == '131047'


def test_unknown_template_is_132001_for_both(sim, wa, ours):
    with pytest.raises(errors.TemplateNotExists):
        wa.send_template(to=LEAD, name='no_such',
            language=TemplateLanguage.ENGLISH)
    result = ours.send_template(LEAD, 'no_such', 'en')
    assert (result.outcome, result.error_code) == ('failed', '132001')


def test_four_buttons_are_131009_for_both(sim, wa, ours):
    titles = ["One", "Two", "Three", "Four"]
    with pytest.raises(errors.InvalidParameter):
        wa.send_message(to=LEAD, text="Pick", buttons=[
                Button(title=t, callback_data=t) for t in titles])
    result = ours.send_buttons(LEAD, "Pick", titles)
    assert (result.outcome, result.error_code) == ('failed', '131009')
    assert sim.sent == []


def test_unknown_media_id_is_a_graph_error_for_both(sim, wa, ours):
    with pytest.raises(errors.WhatsAppError) as raised:
        wa.get_media_url('123404')
    with pytest.raises(GraphError) as mine:
        ours.download_media('123404')
    assert (raised.value.code, raised.value.subcode) == (100, 33)
    assert mine.value.code == '100' and not mine.value.retry
