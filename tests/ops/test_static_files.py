"""Static files as a browser gets them: the admin's pages link their stylesheets by the hashed
names of collectstatic's manifest, and WhiteNoise serves them behind real Gunicorn, compressed
when asked, cached for a year. STATIC_ROOT was filled by the session's `static_files` fixture
(tests/conftest.py), as run-supervisord.sh and the image build fill it."""

import gzip
import http.client
import re

import orjson
import pytest

from tests.conftest import process_env
from tests.ops.processes import GunicornProcess

pytestmark = pytest.mark.django_db(transaction=True)

STYLESHEET = re.compile(rb'<link rel="stylesheet" href="(/static/[^"]+)"')
HASHED_BASE_CSS = re.compile(r"^/static/admin/css/base\.[0-9a-f]{12}\.css$")
A_YEAR_OR_MORE = re.compile(r"max-age=(\d+)")


@pytest.fixture(scope="module")
def web(test_database_url):
    server = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false")).start()
    yield server
    server.stop()


def get(web, path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_the_admin_login_page_stylesheets_are_served_as_css(web):
    response, page = get(web, "/admin/login/")
    assert response.status == 200
    links = [link.decode() for link in STYLESHEET.findall(page)]
    assert any(HASHED_BASE_CSS.match(link) for link in links), links
    for link in links:
        response, body = get(web, link)
        assert response.status == 200, link
        assert response.getheader("Content-Type").startswith("text/css"), link
        assert body, link
        cache_control = response.getheader("Cache-Control")
        assert "immutable" in cache_control, (link, cache_control)
        assert int(A_YEAR_OR_MORE.search(cache_control)[1]) >= 365 * 24 * 3600, (link, cache_control)


def test_a_stylesheet_comes_gzipped_to_a_client_that_asks(web):
    _, plain = get(web, "/static/admin/css/base.css")
    response, body = get(web, "/static/admin/css/base.css", **{"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Vary") == "Accept-Encoding"
    assert gzip.decompress(body) == plain


def test_the_plain_name_is_served_and_cached_briefly(web):
    """Unhashed names still answer (a page cached from before a deploy), but may change."""
    response, body = get(web, "/static/admin/css/base.css")
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/css")
    assert b"body" in body
    assert response.getheader("Cache-Control") == "max-age=60, public"


def test_a_missing_static_file_is_the_api_404(web):
    response, body = get(web, "/static/admin/css/no-such-file.css")
    assert response.status == 404
    assert orjson.loads(body) == {
        "type": "invalid_request",
        "code": "not_found",
        "detail": "No such resource: /static/admin/css/no-such-file.css",
        "attr": None,
    }


def test_the_test_client_links_the_same_hashed_names(client, static_files):
    """Tests that render pages (and a browser pointed at a live server) see the manifest's names."""
    manifest = orjson.loads((static_files / "staticfiles.json").read_bytes())
    page = client.get("/admin/login/").content.decode()
    assert f'href="/static/{manifest["paths"]["admin/css/base.css"]}"' in page
    response = client.get(f"/static/{manifest['paths']['admin/css/base.css']}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
