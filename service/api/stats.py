"""/api/stats: what the dashboard's overview shows."""
from flask import current_app

from db import Session, stats
from service.api import Blueprint
from service.schemas import StatsOut

blp = Blueprint("stats", __name__, url_prefix="/api/stats", description="Counts, queue and processes")


@blp.route("")
@blp.response(200, StatsOut)
def get_stats():
    """Tasks per status and name, finishes per minute, the queue and the processes running tasks."""
    return stats.overview(Session, current_app.config["TASK_LEASE"])
