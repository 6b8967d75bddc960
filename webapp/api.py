"""The JSON API under /api. Errors are answered by errors.py as problem JSON."""

from flask import Blueprint, Response, jsonify, request, url_for

from . import users
from .schemas import list_args_schema, user_page_schema, user_schema

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/users")
def list_users() -> Response:
    args = list_args_schema.load(request.args)
    return jsonify(user_page_schema.dump(users.list_users(**args)))


@bp.post("/users")
def create_user() -> tuple[Response, int, dict[str, str]]:
    user = users.create_user(user_schema.load(request.get_json()))
    return jsonify(user_schema.dump(user)), 201, {"Location": url_for(".get_user", user_id=user.id)}


@bp.get("/users/<id:user_id>")
def get_user(user_id: int) -> Response:
    return jsonify(user_schema.dump(users.get_user(user_id)))


@bp.put("/users/<id:user_id>")
def replace_user(user_id: int) -> Response:
    fields = user_schema.load(request.get_json())
    return jsonify(user_schema.dump(users.update_user(user_id, fields)))


@bp.patch("/users/<id:user_id>")
def update_user(user_id: int) -> Response:
    fields = user_schema.load(request.get_json(), partial=True)
    return jsonify(user_schema.dump(users.update_user(user_id, fields)))


@bp.delete("/users/<id:user_id>")
def delete_user(user_id: int) -> tuple[str, int]:
    users.delete_user(user_id)
    return "", 204
