"""A Tryton JSON-RPC client that logs in the way sao does: POST
/<db>/session/login sets the session cookie, then POST /<db>/rpc/."""
import json
import urllib.error
import urllib.request


class RpcError(Exception):
    "An error answered by the server: its type (e.g. 'AccessError') and text."

    def __init__(self, error):
        self.error = error
        if isinstance(error, list) and error:
            self.type = error[0]
            self.message = error[1][0] if len(error) > 1 and error[1] else ''
        else:
            self.type, self.message = str(error), ''
        super().__init__(f'{self.type}: {self.message}')


class RpcSession:

    def __init__(self, url, database, login, password):
        self.base = f'{url}/{database}'
        self.login, self.password = login, password
        self.cookie = None
        self._log_in()
        self.context = self.call('model.res.user.get_preferences', True, {})

    def _log_in(self):
        self.user_id = self.post('session/login', 'common.db.login',
            [self.login, {'password': self.password}, 'en'])[0]

    def post(self, path, method, params):
        headers = {'Content-Type': 'application/json'}
        if self.cookie:
            headers['Cookie'] = self.cookie
        request = urllib.request.Request(
            f'{self.base}/{path}', headers=headers,
            data=json.dumps({'id': 1, 'method': method, 'params': params}
                ).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                # The cookie is Secure, which http.cookiejar will not send
                # over plain http even to 127.0.0.1; browsers do.
                cookie = response.headers.get('Set-Cookie')
                if cookie:
                    self.cookie = cookie.split(';', 1)[0]
                body = json.loads(response.read())
        except urllib.error.HTTPError as exception:
            raise RpcError(['HTTP %s' % exception.code, [exception.reason]])
        if 'error' in body:
            raise RpcError(body['error'])
        return body['result']

    def call(self, method, *args):
        try:
            return self.post('rpc/', method, list(args))
        except RpcError as error:
            if error.type != 'HTTP 401':
                raise
        # The session expired ([session] timeout, 5 minutes idle): log in
        # again, as sao asks for the password again, and retry once.
        self._log_in()
        return self.post('rpc/', method, list(args))

    def model(self, model, method, *args):
        "Call model.<model>.<method>(*args, context) as the desk does."
        return self.call(f'model.{model}.{method}', *args, self.context)

    # Tryton's search methods take offset, limit and order by position;
    # these name them, so that a test never reads as "0, None, None".
    def search(self, model, domain, *, order=None, offset=0, limit=None):
        "The ids of the records of model matching domain."
        return self.model(model, 'search', domain, offset, limit, order)

    def search_read(self, model, domain, fields, *, order=None, offset=0,
            limit=None):
        "[{'id': ..., field: value}] of the records matching domain."
        return self.model(model, 'search_read', domain, offset, limit, order,
            fields)

    def search_count(self, model, domain):
        "How many records of model match domain."
        return self.model(model, 'search_count', domain)
