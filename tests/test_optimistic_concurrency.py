"""No lost updates: ETags from id and version, If-Match on writes, If-None-Match on reads,
and an edit form that notices when someone saved in between."""

import pytest

from helpers import assert_problem, race

ADA = ("Ada", "ada@example.com")


def etag_of(response) -> str:
    return response.headers["ETag"]


def test_reads_and_writes_carry_an_etag_that_changes_with_every_write(client):
    created = client.post("/api/users", json={"name": "Ada", "email": "ada@example.com"})
    user_id = created.get_json()["id"]
    fetched = client.get(f"/api/users/{user_id}")
    patched = client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    replaced = client.put(f"/api/users/{user_id}", json={"name": "Ada", "email": "ada@example.com"})

    tags = [etag_of(r) for r in (created, fetched, patched, replaced)]
    assert tags[0] == tags[1] == f'"{user_id}.1"'
    assert tags[2] == f'"{user_id}.2"' and tags[3] == f'"{user_id}.3"'


def test_a_write_with_a_matching_if_match_succeeds_and_returns_the_new_tag(store, client):
    [user_id] = store.add_users(ADA)
    tag = etag_of(client.get(f"/api/users/{user_id}"))

    response = client.patch(f"/api/users/{user_id}", json={"name": "Ada King"}, headers={"If-Match": tag})

    assert response.status_code == 200
    assert etag_of(response) != tag
    assert store.users() == [("Ada King", "ada@example.com")]


@pytest.mark.parametrize(
    "method, body",
    [("patch", {"name": "Stale"}), ("put", {"name": "Stale", "email": "stale@example.com"}), ("delete", None)],
)
def test_a_write_with_a_stale_if_match_is_412_and_changes_nothing(store, client, method, body):
    [user_id] = store.add_users(ADA)
    stale = etag_of(client.get(f"/api/users/{user_id}"))
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})  # someone else's write

    response = getattr(client, method)(f"/api/users/{user_id}", json=body, headers={"If-Match": stale})

    assert_problem(response, 412)
    assert store.users() == [("Ada King", "ada@example.com")]


@pytest.mark.parametrize("if_match", ['"999.1"', '"garbage"', 'W/"{id}.1"', '""', '"{id}."'])
def test_an_if_match_for_another_user_or_a_weak_or_malformed_tag_never_matches(store, client, if_match):
    [user_id] = store.add_users(ADA)

    response = client.patch(
        f"/api/users/{user_id}", json={"name": "Nope"}, headers={"If-Match": if_match.format(id=user_id)}
    )

    assert_problem(response, 412)
    assert store.users() == [ADA]


def test_if_match_star_or_a_list_containing_the_current_tag_matches(store, client):
    [user_id] = store.add_users(ADA)

    star = client.patch(f"/api/users/{user_id}", json={"name": "One"}, headers={"If-Match": "*"})
    listed = client.patch(
        f"/api/users/{user_id}", json={"name": "Two"}, headers={"If-Match": f'"{user_id}.1", "{user_id}.2"'}
    )

    assert (star.status_code, listed.status_code) == (200, 200)


def test_a_delete_with_a_matching_if_match_deletes(store, client):
    [user_id] = store.add_users(ADA)

    response = client.delete(f"/api/users/{user_id}", headers={"If-Match": f'"{user_id}.1"'})

    assert response.status_code == 204 and store.users() == []


def test_get_with_a_current_if_none_match_is_304_without_a_body(store, client):
    [user_id] = store.add_users(ADA)
    tag = etag_of(client.get(f"/api/users/{user_id}"))

    unchanged = client.get(f"/api/users/{user_id}", headers={"If-None-Match": tag})
    client.patch(f"/api/users/{user_id}", json={"name": "Ada King"})
    changed = client.get(f"/api/users/{user_id}", headers={"If-None-Match": tag})

    assert unchanged.status_code == 304 and unchanged.data == b""
    assert changed.status_code == 200 and changed.get_json()["name"] == "Ada King"


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_updates_with_the_same_if_match_give_one_200_and_one_412(store, app, committing, round_):
    [user_id] = store.add_users(ADA)

    def update(name):
        return lambda client: client.patch(
            f"/api/users/{user_id}", json={"name": name}, headers={"If-Match": f'"{user_id}.1"'}
        )

    responses = race(app, [update("First"), update("Second")])

    assert sorted(r.status_code for r in responses) == [200, 412]
    winner = next(r for r in responses if r.status_code == 200).get_json()["name"]
    assert store.users() == [(winner, "ada@example.com")]


def test_concurrent_updates_without_if_match_all_succeed_one_after_the_other(store, app, committing):
    [user_id] = store.add_users(ADA)

    def update(n):
        return lambda client: client.patch(f"/api/users/{user_id}", json={"name": f"Writer {n}"})

    responses = race(app, [update(n) for n in range(6)])

    assert [r.status_code for r in responses] == [200] * 6
    assert sorted(etag_of(r) for r in responses) == sorted(f'"{user_id}.{v}"' for v in range(2, 8))


# -- the browser's edit conflict ----------------------------------------------------


def test_saving_a_form_after_someone_else_saved_shows_both_versions_and_overwrites_nothing(store, client, forms):
    [user_id] = store.add_users(ADA)
    form = forms.hidden(f"/users/{user_id}/edit")  # rendered at version 1
    client.patch(f"/api/users/{user_id}", json={"name": "Theirs"})

    page = client.post(f"/users/{user_id}/edit", data={**form, "name": "Mine", "email": "ada@example.com"})

    assert page.status_code == 409
    assert "Someone else changed" in page.text
    assert "<td>Theirs</td><td>Mine</td>" in page.text
    assert store.users() == [("Theirs", "ada@example.com")]
    assert ("version", "2") in forms.HIDDEN.findall(page.text)


def test_the_conflict_page_lets_the_user_reapply_their_change_on_top(store, client, forms):
    [user_id] = store.add_users(ADA)
    form = forms.hidden(f"/users/{user_id}/edit")
    client.patch(f"/api/users/{user_id}", json={"name": "Theirs"})
    conflict = client.post(f"/users/{user_id}/edit", data={**form, "name": "Mine", "email": "ada@example.com"})
    reapply = dict(forms.HIDDEN.findall(conflict.text))

    response = client.post(f"/users/{user_id}/edit", data={**reapply, "name": "Mine", "email": "ada@example.com"})

    assert response.status_code == 303
    assert store.users() == [("Mine", "ada@example.com")]


def test_an_edit_form_without_its_version_is_refused(store, client, forms):
    [user_id] = store.add_users(ADA)
    token = forms.token(f"/users/{user_id}/edit")

    page = client.post(f"/users/{user_id}/edit", data={"csrf_token": token, "name": "X", "email": "x@example.com"})

    assert page.status_code == 422 and "version" in page.text
    assert store.users() == [ADA]
