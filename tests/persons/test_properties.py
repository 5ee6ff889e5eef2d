from pipeline.persons.properties import apply_updates, initial_properties, merged_properties, updates_from


def test_new_person_gets_set_once_then_set():
    updates = updates_from({"$set": {"a": 1, "b": 2}, "$set_once": {"b": 0, "c": 3}})
    assert initial_properties(updates) == {"a": 1, "b": 2, "c": 3}


def test_set_overwrites_set_once_fills_unset_removes():
    current = {"a": 1, "keep": True, "gone": "x"}
    updates = updates_from({"$set": {"a": 2}, "$set_once": {"a": 9, "new": 1}, "$unset": ["gone", "missing"]})
    assert apply_updates(current, updates) == {"a": 2, "keep": True, "new": 1}
    assert current == {"a": 1, "keep": True, "gone": "x"}, "the input must not change (it is an event's snapshot)"


def test_no_change_returns_the_same_object():
    current = {"a": 1}
    assert apply_updates(current, updates_from({"$set": {"a": 1}, "$set_once": {"a": 2}})) is current
    assert apply_updates(current, updates_from({})) is current


def test_malformed_updates_are_ignored():
    updates = updates_from({"$set": "a string", "$set_once": ["a"], "$unset": "a"})
    assert updates.empty
    assert updates_from({"$unset": {"a": 1, "b": None}}).unset == ("a", "b")


def test_nul_characters_are_replaced():
    updates = updates_from({"$set": {"na\x00me": ["x\x00", {"y": "\x00"}]}})
    assert updates.set == {"na\ufffdme": ["x\ufffd", {"y": "\ufffd"}]}


def test_merge_keeps_the_surviving_persons_values():
    assert merged_properties({"a": "other", "b": "other"}, {"a": "into"}) == {"a": "into", "b": "other"}
