"""Django's test client, with requests sent through the WSGI application Gunicorn serves
(bklog_app.wsgi.application), so capture requests take the fast path of
bklog_app/capture/fastpath.py instead of Django's handler."""

import orjson
from django.http import HttpResponse
from django.test import Client

from bklog_app.wsgi import application


class FastPathClient(Client):
    def request(self, **request):
        environ = self._base_environ(**request)
        answer: dict = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
            answer.update(status=int(status.split()[0]), headers=headers)

        body = b"".join(application(environ, start_response))
        response = HttpResponse(body, status=answer["status"])
        for name, value in answer["headers"]:
            response.headers[name] = value
        response.json = lambda: orjson.loads(body)
        response.request = request
        response.client = self
        return response
