"""GET /metrics for Prometheus, and what every request leaves behind: its metrics and log line."""
import time

from flask import Blueprint, Response, g, request

from service import logs, metrics

blp = Blueprint("observe", __name__)


@blp.route("/metrics")
def scrape():
    """Every metric of every worker process, and the queue read from the table."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


@blp.before_app_request
def start_clock():
    g.request_started = time.perf_counter()


@blp.after_app_request
def observe_request(response):
    """Count the request by its route's rule (a bounded set of labels), time it, log it."""
    started = g.pop("request_started", None)
    seconds = time.perf_counter() - started if started is not None else 0.0
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    metrics.HTTP_LATENCY.labels(request.method, route).observe(seconds)
    logs.log_request(request.method, request.path, response.status_code, seconds)
    return response
