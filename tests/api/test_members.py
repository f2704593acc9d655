"""Adding members (SPEC §3): by email for team managers, by user id for global admins only."""

from __future__ import annotations

from tests.factories import Factory


async def test_a_manager_adds_a_teammate_by_email_in_any_case(factory: Factory) -> None:
    owner, mate = await factory.user(), await factory.user(name="Grace")
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/members",
        json={"email": f"  {mate.email.upper()} ", "role": "admin"},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    member = response.json()
    assert (member["userId"], member["role"], member["user"]["name"]) == (mate.id, "admin", "Grace")
    listed = await factory.client.get(f"/api/teams/{team['id']}/members", headers=owner.headers)
    assert mate.id in [m["userId"] for m in listed.json()["items"]]


async def test_an_unknown_email_is_user_not_found(factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/members",
        json={"email": "nobody-here@example.com"},
        headers=owner.headers,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "USER_NOT_FOUND"


async def test_user_ids_cannot_be_walked_to_collect_addresses(factory: Factory) -> None:
    """A non-administrator adding by `userId` is refused before anything is looked up,
    so the answers never reveal whether an id exists, nor its email."""
    owner, stranger = await factory.user(), await factory.user()
    team = await factory.team(owner)
    for user_id in (stranger.id, stranger.id + 10_000):
        response = await factory.client.post(
            f"/api/teams/{team['id']}/members", json={"userId": user_id}, headers=owner.headers
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert stranger.email not in response.text
    listed = await factory.client.get(f"/api/teams/{team['id']}/members", headers=owner.headers)
    assert [m["userId"] for m in listed.json()["items"]] == [owner.id]


async def test_a_global_administrator_may_add_by_user_id(factory: Factory) -> None:
    owner, admin, mate = await factory.user(), await factory.user(admin=True), await factory.user()
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/members", json={"userId": mate.id}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["userId"] == mate.id


async def test_email_and_user_id_together_or_neither_are_refused(factory: Factory) -> None:
    owner, admin, mate = await factory.user(), await factory.user(admin=True), await factory.user()
    team = await factory.team(owner)
    for body in ({}, {"role": "member"}, {"email": mate.email, "userId": mate.id}):
        response = await factory.client.post(
            f"/api/teams/{team['id']}/members", json=body, headers=admin.headers
        )
        assert response.status_code == 422, body
