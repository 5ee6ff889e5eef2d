"""Autocapture elements to PostHog's `elements_chain`: pipeline/ingestion/elements.py."""

from pipeline.ingestion.elements import MAX_HREF, MAX_TEXT, chain_to_elements, elements_to_chain

# What posthog-js sends as `$elements` when it is not told to send `$elements_chain` itself.
POSTHOG_JS_ELEMENTS = [
    {
        "tag_name": "a",
        "$el_text": "Buy now",
        "attr__href": "/buy?plan=pro",
        "attr__class": "btn btn-primary",
        "attr__id": "buy",
        "attr__data-ph": "cta",
        "nth_child": 2,
        "nth_of_type": 1,
    },
    {"tag_name": "body", "nth_child": 1, "nth_of_type": 1},
]


def test_posthog_js_elements_keep_their_text_href_id_classes_and_attributes():
    chain = elements_to_chain(POSTHOG_JS_ELEMENTS)
    assert chain == (
        'a.btn.btn-primary:attr__class="btn btn-primary"attr__data-ph="cta"attr__href="/buy?plan=pro"'
        'attr__id="buy"attr_id="buy"href="/buy?plan=pro"nth-child="2"nth-of-type="1"text="Buy now"'
        ';body:nth-child="1"nth-of-type="1"'
    )
    [link, body] = chain_to_elements(chain)
    assert (link["tag_name"], link["text"], link["href"], link["attr_id"]) == ("a", "Buy now", "/buy?plan=pro", "buy")
    assert link["attr_class"] == ["btn", "btn-primary"]
    assert link["attributes"]["attr__data-ph"] == "cta"
    assert (body["tag_name"], body["nth_child"], body["order"]) == ("body", 1, 1)


def test_text_and_href_are_cut_as_posthog_cuts_them():
    [element] = chain_to_elements(
        elements_to_chain([{"tag_name": "a", "$el_text": "t" * 1000, "attr__href": "/" + "h" * 5000}])
    )
    assert len(element["text"]) == MAX_TEXT
    assert len(element["href"]) == MAX_HREF


def test_elements_already_in_posthogs_shape_are_kept_as_they_are():
    element = {
        "tag_name": "button",
        "attr_class": ["cta"],
        "text": "Go",
        "attr_id": "go",
        "attributes": {"attr__x": "1"},
    }
    assert elements_to_chain([element]) == 'button.cta:attr__x="1"attr_id="go"text="Go"'


def test_quotes_survive_the_round_trip():
    chain = elements_to_chain([{"tag_name": "span", "$el_text": 'say "hi"; then go'}])
    assert chain_to_elements(chain)[0]["text"] == 'say "hi"; then go'
