"""A small concurrent HTTP client with keep-alive, for load against a local server."""
import http.client
import json
import statistics
import threading
import time


def percentile(values, fraction):
    """The value below which fraction of values fall (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def summarize(latencies, elapsed):
    """p50/p99 in ms and requests per second."""
    return {
        "n": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "req_per_s": round(len(latencies) / elapsed, 1),
    }


def spread(total, threads, work, budget=None):
    """Call work() total times from a pool of threads; return the seconds it took.

    With a budget, no call starts after that many seconds (so fewer may run).
    """
    lock = threading.Lock()
    remaining = [total]
    started = time.perf_counter()
    stop_at = started + budget if budget is not None else float("inf")

    def worker():
        while True:
            with lock:
                if not remaining[0] or time.perf_counter() > stop_at:
                    return
                remaining[0] -= 1
            work()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


def load(port, method, path, body, total, concurrency, budget=None):
    """Send total requests from concurrency threads; return (latencies, elapsed, statuses).

    A body of None sends none (a GET); a budget in seconds may cut the run short.
    """
    payload = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    latencies, statuses, connections = [], {}, []
    lock = threading.Lock()
    local = threading.local()  # one keep-alive connection per thread

    def request():
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connections.append(local.connection)
        started = time.perf_counter()
        local.connection.request(method, path, payload, headers)
        response = local.connection.getresponse()
        response.read()
        took = time.perf_counter() - started
        with lock:
            latencies.append(took)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    elapsed = spread(total, concurrency, request, budget)
    for connection in connections:
        connection.close()
    return latencies, elapsed, statuses
