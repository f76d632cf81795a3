"""/api/users: create and read users directly (no task)."""
from flask import url_for
from flask.views import MethodView
from flask_smorest import abort

from db import Session, users
from service.api import Blueprint, PAGE_HEADERS, one_page
from service.api.openapi import LOCATION
from service.schemas import PageQuery, UserIn, UserOut

blp = Blueprint("users", __name__, url_prefix="/api/users", description="Users")


@blp.route("")
class Users(MethodView):
    @blp.arguments(UserIn)
    @blp.response(201, UserOut, headers={"Location": LOCATION})
    def post(self, data):
        """Create a user now."""
        user = users.create_user(Session, **data)
        Session.commit()
        return user, 201, {"Location": url_for("users.UserItem", user_id=user.id)}

    @blp.arguments(PageQuery, location="query")
    @blp.response(200, UserOut(many=True), headers=PAGE_HEADERS)
    def get(self, query):
        """List users by id."""
        return one_page(users.list_users, query)


@blp.route("/<id:user_id>")
class UserItem(MethodView):
    @blp.response(200, UserOut)
    def get(self, user_id):
        """Get one user."""
        user = users.get_user(Session, user_id)
        if user is None:
            abort(404, message=f"user {user_id} not found")
        return user
