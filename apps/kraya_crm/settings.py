"""The [kraya_crm] settings a site must make its own before it takes
anything from outside, and the demo values they have on a demo site.

The demo site's trytond.conf is in this repository, so its secrets are
public: a site that is not a demo ([kraya_crm] demo) and still holds one,
or holds none, would let anyone post WhatsApp deliveries, inbound emails or
unsubscribe links. The endpoints refuse to work then (http.secret) and
./crm start says which setting to fill. No trytond import: ./crm reads this
before trytond is configured."""

# What the demo site (sites/default/trytond.conf) ships with; new_site
# blanks them for a site that is not a demo. Web form capture keys are not
# here: each lead source gets a random one in its own database.
DEMO_VALUES = {
    'whatsapp_verify_token': 'kraya-demo-verify-token',
    'whatsapp_app_secret': 'kraya-demo-app-secret',
    'whatsapp_api_url': 'http://127.0.0.1:8100',
    'whatsapp_phone_number_id': '100000000000001',
    'whatsapp_access_token': 'kraya-demo-access-token',
    'whatsapp_business_account_id': '100000000000000',
    'link_secret': 'kraya-demo-link-secret',
    'email_inbound_secret': 'kraya-demo-email-inbound-secret',
    'privacy_pepper': 'kraya-demo-privacy-pepper',
    }

# setting -> (what stays shut while it is unusable, where its value comes
# from), in the order ./crm start lists them.
SECRETS = {
    'whatsapp_app_secret': (
        "the WhatsApp webhook refuses every delivery",
        "Meta's App Dashboard, App settings > Basic > App secret"),
    'whatsapp_verify_token': (
        "Meta cannot verify the WhatsApp webhook",
        "a random string of yours, entered again in the App Dashboard, "
        "WhatsApp > Configuration > Webhook"),
    'whatsapp_phone_number_id': (
        "no WhatsApp message can be sent",
        "the App Dashboard, WhatsApp > API Setup"),
    'whatsapp_access_token': (
        "no WhatsApp message can be sent",
        "a system user's token: Business Settings > Users > System users"),
    'email_inbound_secret': (
        "inbound email is refused",
        "a random string of yours, shared with your inbound-mail service"),
    'link_secret': (
        "emails cannot carry unsubscribe links and the links are refused",
        "a random string of yours (./crm new-site writes one)"),
    'privacy_pepper': (
        "personal data cannot be erased and the suppression list is not "
        "checked",
        "a random string of yours (./crm new-site writes one); never "
        "change it: the suppression list and consent proofs are hashed "
        "with it"),
    }


def is_demo(value):
    "Whether a [kraya_crm] demo setting says the site is a demo."
    return str(value or '').strip().lower() in {'1', 'true', 'yes', 'on'}


def refusal(name, value, demo):
    "Why the secret setting `name` may not be used, or None when it may."
    if not value:
        return f"[kraya_crm] {name} is empty"
    if not demo and value == DEMO_VALUES.get(name):
        return (f"[kraya_crm] {name} is still the public demo value on a "
            "site that is not a demo")
    return None


def warnings(get, demo):
    """A line for each secret setting of a site that is unusable, saying
    what it stops and where its value comes from. get(name) reads one."""
    lines = []
    for name, (stopped, source) in SECRETS.items():
        reason = refusal(name, get(name), demo)
        if reason:
            lines.append(f"{reason}, so {stopped}. Fill it in with {source}.")
    return lines
