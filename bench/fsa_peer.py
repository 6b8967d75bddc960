"""The peer: the app's hot endpoints written the way Flask-SQLAlchemy 3.1 documents.

`make bench` serves this beside the app and the floor, under the same gunicorn
settings, on the same database. It is what a developer following Flask-SQLAlchemy's
own guide would write: `db = SQLAlchemy(...)`, a declarative model, `db.get_or_404`,
`db.session`, `db.paginate`-free keyset queries, `jsonify` of a dict.

    GET  /api/users/<id>   db.get_or_404(User, id); the user, with its ETag
    GET  /api/users        ?per_page=&q=&cursor=: a capped count and a page
    POST /api/users        db.session.add + commit (no audit row: it has no history)

No marshmallow, no audit, no metrics: the peer does less than the app, which is the
point of the comparison.
"""

import base64
import json
import os
from datetime import UTC, datetime

from flask import Flask, abort, jsonify, request, url_for
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Integer, String, event, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CAP = 10_000


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))
    version: Mapped[int] = mapped_column(Integer, default=1)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "updated_at": self.updated_at.astimezone(UTC).isoformat(),
        }


def _url(raw: str) -> str:
    # Flask-SQLAlchemy passes the URL to SQLAlchemy, which maps a bare postgresql://
    # to psycopg 3; the app and the floor use psycopg2, and so does the peer.
    return raw.replace("postgresql://", "postgresql+psycopg2://", 1) if raw.startswith("postgresql://") else raw


app = Flask(__name__)
app.json.sort_keys = False
app.config["SQLALCHEMY_DATABASE_URI"] = _url(os.environ["DATABASE_URL"])
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# One connection per thread, as the app sizes its pool; the rest are Flask-SQLAlchemy's defaults.
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": threads}
db.init_app(app)

if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
    # The SQLite file settings the app uses (WAL, a busy timeout), so that both
    # measure the same database and not two journal modes.
    with app.app_context():

        @event.listens_for(db.engine, "connect")
        def _sqlite_settings(dbapi_connection, record):
            for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
                dbapi_connection.execute(f"PRAGMA {pragma}")


def user_response(user: User, status: int = 200):
    response = jsonify(user.to_dict())
    response.status_code = status
    response.set_etag(f"{user.id}.{user.version}")
    return response


@app.get("/api/users/<int:user_id>")
def get_user(user_id: int):
    return user_response(db.get_or_404(User, user_id)).make_conditional(request)


@app.get("/api/users")
def list_users():
    per_page = min(request.args.get("per_page", 20, type=int), 100)
    q = request.args.get("q", "").strip()
    after = None
    if "cursor" in request.args:
        raw = request.args["cursor"]
        after = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))["after"]
    query = select(User)
    if q:
        query = query.where(or_(User.name.icontains(q, autoescape=True), User.email.icontains(q, autoescape=True)))
    capped = query.with_only_columns(User.id).limit(CAP + 1).subquery()
    count = db.session.scalar(select(func.count()).select_from(capped))
    page = query.order_by(User.id).limit(per_page + 1)
    if after is not None:
        page = page.where(User.id > after)
    rows = db.session.scalars(page).all()
    next_url = None
    if len(rows) > per_page:
        token = (
            base64.urlsafe_b64encode(json.dumps({"after": rows[per_page - 1].id}, separators=(",", ":")).encode())
            .rstrip(b"=")
            .decode()
        )
        next_url = url_for("list_users", q=q or None, per_page=per_page, cursor=token, _external=True)
    response = jsonify(
        items=[user.to_dict() for user in rows[:per_page]],
        page=None if after is not None else 1,
        per_page=per_page,
        total=min(count, CAP),
        total_capped=count > CAP,
        next=next_url,
    )
    if next_url:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


@app.post("/api/users")
def create_user():
    body = request.get_json()
    user = User(name=body["name"].strip(), email=body["email"].strip().lower())
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409)
    response = user_response(user, 201)
    response.headers["Location"] = url_for("get_user", user_id=user.id)
    return response


@app.get("/healthz")
def healthz():
    db.session.execute(select(1))
    return jsonify(status="ok")
