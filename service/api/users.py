"""/api/users: create and read users directly (no task)."""
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from db import Session, users
from service.api import page_window
from service.schemas import UserIn, UserOut

blp = Blueprint("users", __name__, url_prefix="/api/users", description="Users")


@blp.route("")
class Users(MethodView):
    @blp.arguments(UserIn)
    @blp.response(201, UserOut)
    def post(self, data):
        """Create a user now."""
        user = users.create_user(Session, **data)
        Session.commit()
        return user, 201, {"Location": url_for("users.User", user_id=user.id)}

    @blp.response(200, UserOut(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """List users by id."""
        page_size, offset = page_window(pagination_parameters)
        items, total = users.list_users(Session, page_size, offset)
        pagination_parameters.item_count = total
        return items


@blp.route("/<int:user_id>")
class User(MethodView):
    @blp.response(200, UserOut)
    def get(self, user_id):
        """Get one user."""
        user = users.get_user(Session, user_id)
        if user is None:
            abort(404, message=f"user {user_id} not found")
        return user
