"""WhatsApp Cloud API webhook bodies, shaped as Meta sends them, and a
client that signs and posts them like Meta does."""
import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.request

PHONE_NUMBER_ID = '106540352242922'
_ids = itertools.count(1)


def wamid():
    return f'wamid.HBgMOTE5ODc2NTQzMjEwFQIAEhgUM0E{time.time_ns()}{next(_ids)}'


def delivery(value):
    return {
        'object': 'whatsapp_business_account',
        'entry': [{
                'id': '102290129340398',
                'changes': [{
                        'field': 'messages',
                        'value': {
                            'messaging_product': 'whatsapp',
                            'metadata': {
                                'display_phone_number': '15550783881',
                                'phone_number_id': PHONE_NUMBER_ID,
                                },
                            **value,
                            },
                        }],
                }],
        }


def inbound(wa_id, name='Asha Kulkarni', message_id=None, kind='text',
        content=None, timestamp=None):
    "A message a lead sent us."
    message = {
        'from': wa_id,
        'id': message_id or wamid(),
        'timestamp': str(timestamp or int(time.time())),
        'type': kind,
        }
    message[kind] = content if content is not None else {
        'body': "Hi, is the 2 BHK in Powai still available?"}
    return delivery({
            'contacts': [{'profile': {'name': name}, 'wa_id': wa_id}],
            'messages': [message],
            })


def status(message_id, state, recipient='919876543210', errors=None):
    "What happened to a message we sent."
    value = {
        'id': message_id,
        'status': state,
        'timestamp': str(int(time.time())),
        'recipient_id': recipient,
        }
    if errors:
        value['errors'] = errors
    return delivery({'statuses': [value]})


class WebhookClient:

    def __init__(self, crm_site):
        config = crm_site.site.config()
        self.secret = config.get('kraya_crm', 'whatsapp_app_secret')
        self.verify_token = config.get('kraya_crm', 'whatsapp_verify_token')
        self.url = f'{crm_site.url}/{crm_site.database}/crm/whatsapp/webhook'

    def sign(self, body):
        return 'sha256=' + hmac.new(
            self.secret.encode(), body, hashlib.sha256).hexdigest()

    def post(self, payload=None, body=None, signature=None, sign=True):
        "POST a payload (or raw body); returns (status, parsed JSON answer)."
        if body is None:
            body = json.dumps(payload).encode()
        headers = {'Content-Type': 'application/json'}
        if sign:
            headers['X-Hub-Signature-256'] = signature or self.sign(body)
        request = urllib.request.Request(self.url, data=body, headers=headers)
        return self._open(request)

    def get(self, query):
        return self._open(urllib.request.Request(f'{self.url}?{query}'))

    @staticmethod
    def _open(request):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
