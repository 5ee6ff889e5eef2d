"""/api/projects/<id>/persons/: list with filters, retrieve, delete, scoping, error bodies."""

import uuid

import orjson
import pytest

from bklog_app.persons.models import Person, PersonDistinctId
from tests.factories import api_client_for, make_project
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def persons(project):
    resolve(
        project.id,
        [
            normalised("e", "alice-anon", 0, **{"$set": {"email": "alice@example.com", "plan": "pro", "age": 30}}),
            normalised("$identify", "alice", 1, **{"$anon_distinct_id": "alice-anon"}),
            normalised("e", "bob", 2, **{"$set": {"email": "bob@example.com", "plan": "pro", "beta": True}}),
            normalised("e", "carol", 3, **{"$set": {"email": "carol@example.com", "plan": "free", "age": 30}}),
        ],
    )
    return {row.distinct_id: row.person_id for row in PersonDistinctId.objects.all()}


def url(project, suffix=""):
    return f"/api/projects/{project.id}/persons/{suffix}"


def test_list_newest_first_with_distinct_ids(api_client, project, persons):
    response = api_client.get(url(project))
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    assert [p["distinct_ids"] for p in body["results"]] == [["carol"], ["bob"], ["alice", "alice-anon"]]
    alice = body["results"][2]
    assert alice == {
        "id": str(persons["alice"]),
        "distinct_ids": ["alice", "alice-anon"],
        "properties": {"email": "alice@example.com", "plan": "pro", "age": 30},
        "created_at": "2024-03-01T10:00:00.000Z",
        "is_identified": True,
    }


def test_filter_by_distinct_id(api_client, project, persons):
    body = api_client.get(url(project), {"distinct_id": "alice-anon"}).json()
    assert [p["id"] for p in body["results"]] == [str(persons["alice"])]
    assert api_client.get(url(project), {"distinct_id": "nobody"}).json()["results"] == []


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"email": "bob@example.com"}, ["bob"]),
        ({"plan": "pro"}, ["bob", "alice"]),
        ({"plan": "pro", "age": 30}, ["alice"]),
        ({"age": 30}, ["carol", "alice"]),
        ({"beta": True}, ["bob"]),
        ({"plan": "enterprise"}, []),
    ],
)
def test_filter_by_properties(api_client, project, persons, properties, expected):
    body = api_client.get(url(project), {"properties": orjson.dumps(properties).decode()}).json()
    assert [p["distinct_ids"][0] for p in body["results"]] == expected


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("{not json", 'Must be a JSON object, such as {"email": "a@b.c"}; check the quoting and URL-encoding.'),
        ('["email"]', 'Must be a non-empty JSON object, such as {"email": "a@b.c"}.'),
        ("{}", 'Must be a non-empty JSON object, such as {"email": "a@b.c"}.'),
        (
            '{"tags": ["a"]}',
            "The value of 'tags' must be a string, number, boolean or null; objects and lists cannot be matched.",
        ),
    ],
)
def test_bad_properties_filter(api_client, project, value, detail):
    response = api_client.get(url(project), {"properties": value})
    assert response.status_code == 400
    assert response.json() == {"type": "validation_error", "code": "invalid", "detail": detail, "attr": "properties"}


@pytest.mark.parametrize(
    ("params", "attr", "code"),
    [
        ({"limit": "0"}, "limit", "min_value"),
        ({"limit": "x"}, "limit", "invalid"),
        ({"cursor": "@@"}, "cursor", "invalid"),
    ],
)
def test_bad_paging_parameters(api_client, project, params, attr, code):
    response = api_client.get(url(project), params)
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["code"], body["attr"]) == ("validation_error", code, attr)


def test_paging_with_next_links(api_client, project):
    resolve(project.id, [normalised("e", f"u{n:02d}", n) for n in range(25)])
    seen = []
    next_url = url(project) + "?limit=10"
    while next_url:
        body = api_client.get(next_url).json()
        seen += [p["distinct_ids"][0] for p in body["results"]]
        next_url = body["next"]
    assert seen == [f"u{n:02d}" for n in reversed(range(25))]


def test_retrieve(api_client, project, persons):
    response = api_client.get(url(project, f"{persons['bob']}/"))
    assert response.status_code == 200
    assert response.json()["distinct_ids"] == ["bob"]


@pytest.mark.parametrize("person_id", ["not-a-uuid", str(uuid.uuid4())])
def test_retrieve_unknown(api_client, project, person_id):
    response = api_client.get(url(project, f"{person_id}/"))
    assert response.status_code == 404
    assert response.json() == {
        "type": "invalid_request",
        "code": "not_found",
        "detail": "No such person in this project.",
        "attr": None,
    }


def test_delete(api_client, project, persons):
    response = api_client.delete(url(project, f"{persons['alice']}/"))
    assert response.status_code == 204
    assert not Person.objects.filter(uuid=persons["alice"]).exists()
    assert not PersonDistinctId.objects.filter(distinct_id__in=["alice", "alice-anon"]).exists()
    assert api_client.delete(url(project, f"{persons['alice']}/")).status_code == 404


def test_other_organizations_see_nothing(project, persons):
    outsider = api_client_for(make_project().organization)
    for response in (
        outsider.get(url(project)),
        outsider.get(url(project, f"{persons['bob']}/")),
        outsider.delete(url(project, f"{persons['bob']}/")),
    ):
        assert response.status_code == 404
        assert response.json()["type"] == "invalid_request"
    assert Person.objects.filter(uuid=persons["bob"]).exists()


def test_a_person_of_another_project_of_the_same_org_is_404(api_client, project, persons):
    sibling = make_project(project.organization)
    assert api_client.get(url(sibling, f"{persons['bob']}/")).status_code == 404
    assert api_client.get(url(sibling)).json()["results"] == []


def test_requires_authentication(client, project):
    response = client.get(url(project))
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"


def test_nul_characters_in_filters(api_client, project):
    resolve(project.id, [normalised("e", "u", **{"$set": {"name": "a\x00b"}})])
    response = api_client.get(url(project), {"properties": '{"name": "a\\u0000b"}'})
    assert response.status_code == 200
    assert [p["properties"] for p in response.json()["results"]] == [{"name": "a\ufffdb"}]
    response = api_client.get(url(project), {"distinct_id": "a\x00b"})
    assert response.status_code == 400
    assert response.json()["attr"] == "distinct_id"


def test_schema_documents_the_persons_api(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert {"get"} <= set(paths["/api/projects/{project_id}/persons/"])
    assert {"get", "delete"} <= set(paths["/api/projects/{project_id}/persons/{person_id}/"])
    parameters = {p["name"] for p in paths["/api/projects/{project_id}/persons/"]["get"]["parameters"]}
    assert {"distinct_id", "properties", "limit", "cursor"} <= parameters
