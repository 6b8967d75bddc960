"""A model-based fuzzer: Hypothesis drives the API with random sequences of calls and
checks every answer against an in-memory model of what the service should hold.

Rules: create, get, put and patch (with a current, a stale or no If-Match), delete,
import (atomic and partial), history, and lists and searches walked by cursor.
Invariants after every step: emails are unique, versions only grow, each user's
history is every change made to it in order, and a cursor walk visits each user
once. Emails come from a small pool, in mixed case, so that conflicts are frequent.

Bounded for CI by FUZZ_EXAMPLES (default 20) and FUZZ_STEPS (default 25); `make fuzz`
runs a long one. Each example starts on an emptied database.
"""

import os
from urllib.parse import urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule, run_state_machine_as_test
from sqlalchemy import delete

from webapp.db import get_engine
from webapp.domain.models import ApiToken, AuditEntry, SignInFailures, User

from helpers import ADMIN_EMAIL, ADMIN_NAME, add_admin, client_class

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
STEPS = int(os.environ.get("FUZZ_STEPS", "25"))

names = st.sampled_from(["Ada", "Alan", "Grace", "Edsger", "Barbara", "Ken"])
emails = st.builds(
    lambda local, upper: (local.upper() if upper else local) + "@example.com",
    st.sampled_from(["ada", "alan", "grace", "edsger", "barbara", "ken", "linus"]),
    st.booleans(),
)
preconditions = st.sampled_from(["none", "current", "stale"])


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


class Model:
    """What the service should hold: users by id, and each one's history, oldest first."""

    def __init__(self) -> None:
        self.users: dict[int, dict] = {}
        self.history: dict[int, list[str]] = {}
        self.largest_id = 0

    def owner_of(self, email: str) -> int | None:
        return next((uid for uid, user in self.users.items() if user["email"] == email.lower()), None)


def make_machine(app):
    class ApiMachine(RuleBasedStateMachine):
        ids = Bundle("ids")

        def __init__(self) -> None:
            super().__init__()
            with get_engine(app).begin() as connection:
                for table in (ApiToken, SignInFailures, User, AuditEntry):
                    connection.execute(delete(table))
            app.test_client_class = client_class(add_admin(app))
            self.client = app.test_client()
            self.model = Model()
            self.versions_seen: dict[int, int] = {}
            self.admin_id = self.client.get("/api/users").get_json()["items"][0]["id"]  # the only user

        # -- helpers --------------------------------------------------------------------

        def version_header(self, user_id: int, kind: str) -> dict[str, str]:
            user = self.model.users.get(user_id)
            if kind == "none" or user is None:
                return {}
            version = user["version"] if kind == "current" else user["version"] + 1  # never current
            return {"If-Match": f'"{user_id}.{version}"'}

        def check_user(self, response, user_id: int) -> None:
            expected = self.model.users[user_id]
            body = response.get_json()
            assert (body["id"], body["name"], body["email"]) == (user_id, expected["name"], expected["email"])
            assert response.headers["ETag"] == f'"{user_id}.{expected["version"]}"'

        def changed(self, user_id: int, fields: dict) -> None:
            user = self.model.users[user_id]
            if any(user[name] != value for name, value in fields.items()):
                user.update(fields)
                user["version"] += 1
                self.model.history[user_id].append("update")

        # -- rules -------------------------------------------------------------------------

        @rule(target=ids, name=names, email=emails)
        def create(self, name, email):
            response = self.client.post("/api/users", json={"name": name, "email": email})
            if self.model.owner_of(email) is not None:
                assert response.status_code == 409
                return multiple()
            assert response.status_code == 201, response.get_json()
            user_id = response.get_json()["id"]
            assert user_id > self.model.largest_id  # never an id given before
            self.model.largest_id = user_id
            self.model.users[user_id] = {"name": name, "email": email.lower(), "version": 1}
            self.model.history[user_id] = ["insert"]
            self.check_user(response, user_id)
            return user_id

        @rule(user_id=ids)
        def get(self, user_id):
            response = self.client.get(f"/api/users/{user_id}")
            if user_id not in self.model.users:
                assert response.status_code == 404
                return
            assert response.status_code == 200
            self.check_user(response, user_id)

        @rule(user_id=ids, name=names, email=emails, precondition=preconditions)
        def put(self, user_id, name, email, precondition):
            headers = self.version_header(user_id, precondition)
            response = self.client.put(f"/api/users/{user_id}", json={"name": name, "email": email}, headers=headers)
            if user_id not in self.model.users:
                assert response.status_code == 404
            elif precondition == "stale":
                assert response.status_code == 412
            elif self.model.owner_of(email) not in (None, user_id):
                assert response.status_code == 409
            else:
                assert response.status_code == 200, response.get_json()
                self.changed(user_id, {"name": name, "email": email.lower()})
                self.check_user(response, user_id)

        @rule(user_id=ids, name=names, precondition=preconditions)
        def patch(self, user_id, name, precondition):
            headers = self.version_header(user_id, precondition)
            response = self.client.patch(f"/api/users/{user_id}", json={"name": name}, headers=headers)
            if user_id not in self.model.users:
                assert response.status_code == 404
            elif precondition == "stale":
                assert response.status_code == 412
            else:
                assert response.status_code == 200, response.get_json()
                self.changed(user_id, {"name": name})
                self.check_user(response, user_id)

        @rule(user_id=ids, precondition=preconditions)
        def remove(self, user_id, precondition):
            headers = self.version_header(user_id, precondition)
            response = self.client.delete(f"/api/users/{user_id}", headers=headers)
            if user_id not in self.model.users:
                assert response.status_code == 404
            elif precondition == "stale":
                assert response.status_code == 412
            else:
                assert response.status_code == 204
                del self.model.users[user_id]
                self.model.history[user_id].append("delete")

        @rule(target=ids, rows=st.lists(st.tuples(names, emails), min_size=1, max_size=6), atomic=st.booleans())
        def import_users(self, rows, atomic):
            mode = "atomic" if atomic else "partial"
            response = self.client.post(
                f"/api/users/import?mode={mode}", json=[{"name": n, "email": e} for n, e in rows]
            )
            seen, new, rejected = set(), [], 0
            for name, email in rows:
                if email.lower() in seen or self.model.owner_of(email) is not None:
                    rejected += 1
                else:
                    new.append((name, email.lower()))
                seen.add(email.lower())
            body = response.get_json()
            assert body["rejected_count"] == rejected
            if atomic and rejected:
                new = []
            if not new:
                assert response.status_code == 422
                return multiple()
            assert response.status_code == 201 and body["created"] == len(new)
            # Their ids, in file order, after every id given before.
            found = {user["email"]: user["id"] for user in self.walk("/api/users?per_page=100")}
            created = [found[email] for _, email in new]
            assert created == sorted(created) and created[0] > self.model.largest_id
            self.model.largest_id = created[-1]
            for (name, email), user_id in zip(new, created, strict=True):
                self.model.users[user_id] = {"name": name, "email": email, "version": 1}
                self.model.history[user_id] = ["insert"]
            return multiple(*created)

        @rule(user_id=ids)
        def history(self, user_id):
            response = self.client.get(f"/api/users/{user_id}/history?per_page=100")
            assert response.status_code == 200
            actions = [entry["action"] for entry in response.get_json()["items"]]
            assert actions == self.model.history[user_id][::-1]  # newest first, every change

        @rule(per_page=st.integers(1, 4), q=st.sampled_from(["", "a", "AL", "example", "e"]))
        def list_by_cursor(self, per_page, q):
            query = f"?per_page={per_page}" + (f"&q={q}" if q else "")
            listed = self.walk("/api/users" + query)
            ids = [user["id"] for user in listed]
            assert len(ids) == len(set(ids)) and ids == sorted(ids)  # each user once, in id order
            expected = {uid for uid, user in self.model.users.items() if self.matches(user, q)}
            if self.matches({"name": ADMIN_NAME, "email": ADMIN_EMAIL}, q):
                expected.add(self.admin_id)
            assert set(ids) == expected

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def emails_are_unique(self):
            stored = [user["email"] for user in self.model.users.values()]
            assert len(stored) == len(set(stored))

        @invariant()
        def versions_only_grow(self):
            for user_id, user in self.model.users.items():
                assert user["version"] >= self.versions_seen.get(user_id, 1)
                self.versions_seen[user_id] = user["version"]
                assert user["version"] == self.model.history[user_id].count("update") + 1

        # -----------------------------------------------------------------------------------

        @staticmethod
        def matches(user: dict, q: str) -> bool:
            return not q or q.lower() in user["name"].lower() or q.lower() in user["email"].lower()

        def walk(self, path: str) -> list[dict]:
            """Every item of a list, following `next` to its end."""
            items: list[dict] = []
            while path:
                response = self.client.get(path)
                assert response.status_code == 200
                body = response.get_json()
                items += body["items"]
                path = path_of(body["next"]) if body["next"] else ""
                assert len(items) < 1000  # a cursor that never ends
            return items

    return ApiMachine


def test_the_api_agrees_with_a_model_of_it_under_random_sequences_of_calls(app, _schema):
    machine = make_machine(app)
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        with get_engine(app).begin() as connection:
            for table in (ApiToken, SignInFailures, User, AuditEntry):
                connection.execute(delete(table))
