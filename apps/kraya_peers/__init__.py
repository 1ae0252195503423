"""Local stand-ins for what cannot be reached from here, speaking the same
protocols as the real services, so that the app's real clients talk to
them in the demo, the tests and the benchmarks:

whatsapp  the WhatsApp Cloud API (Graph API sends, signed status webhooks)
smtp      an SMTP server that keeps, files or drops what it is sent

They import nothing of trytond or of the module: they are the other side
of the wire, and a test oracle must not share the code it checks."""
