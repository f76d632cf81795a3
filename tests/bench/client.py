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


def load(port, method, path, body, total, concurrency):
    """Send total requests from concurrency threads; return (latencies, elapsed, statuses)."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    latencies, statuses = [], {}
    lock = threading.Lock()
    remaining = [total]

    def worker():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            connection.request(method, path, payload, headers)
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, statuses
