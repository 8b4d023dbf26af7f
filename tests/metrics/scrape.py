"""/metrics through the Prometheus project's own Python parser (prometheus_client.parser),
scraped while a batch runs: every family parses with its declared type and follows the
naming rules, the numbers move as the batch runs, and at the end they agree with the
batch's request_counts. Starts its own `satchel serve`.

    python scrape.py SATCHEL_BINARY
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

N_OK, N_BAD = 60, 5


def free_addr():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


def http(method, url, body=None):
    request = urllib.request.Request(url, method=method, data=body, headers={
        "x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read()


def scrape(url):
    """{family name: family}, checked for types and names."""
    status, headers, body = http("GET", url)
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers["content-type"]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, family in families.items():
        assert name.startswith("satchel_"), name
        assert family.documentation, "%s has no HELP" % name
        assert family.type in ("counter", "gauge", "histogram"), (name, family.type)
        # The parser drops a counter's `_total` from the family name; the samples keep it.
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
        for sample in family.samples:
            assert sample.labels.get("node"), (name, sample)
    return families


def value(families, family, sample_name=None, **labels):
    """The one sample of `family` named `sample_name` with `labels`; 0 if not there (yet)."""
    if family not in families:
        return 0.0
    found = [s.value for s in families[family].samples
             if s.name == (sample_name or family) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else 0.0


def main(binary):
    work = tempfile.mkdtemp(prefix="satchel-metrics-")
    api, metrics = free_addr(), free_addr()
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [binary, "serve", "--listen", api, "--db", os.path.join(work, "s.db"), "--metrics-listen", metrics,
         "--emulator-latency", "100ms", "--max-in-flight", "4"], stderr=log, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                http("GET", "http://%s/healthz" % metrics)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.05)
        url = "http://%s/metrics" % metrics
        requests = [{"custom_id": "ok%d" % i, "params": {"model": "claude-test", "max_tokens": 8,
                     "messages": [{"role": "user", "content": "hello %d" % i}]}} for i in range(N_OK)]
        requests += [{"custom_id": "bad%d" % i, "params": {"model": "claude-test", "max_tokens": 8,
                      "messages": []}} for i in range(N_BAD)]
        body = json.dumps({"requests": requests}).encode()
        _, _, created = http("POST", "http://%s/v1/messages/batches" % api, body)
        batch_id = json.loads(created)["id"]

        done_seen, last_attempts, moves = set(), 0.0, 0
        deadline = time.time() + 60
        while True:
            families = scrape(url)
            done = value(families, "satchel_requests", result="succeeded") + \
                value(families, "satchel_requests", result="errored")
            done_seen.add(done)
            attempts = value(families, "satchel_backend_attempts", "satchel_backend_attempts_total",
                             backend="emulator", outcome="success")
            assert attempts >= last_attempts, "a counter went down"
            moves += attempts > last_attempts
            last_attempts = attempts
            if value(families, "satchel_batches", status="ended") == 1:
                break
            assert time.time() < deadline, "the batch did not end"
            time.sleep(0.2)
        assert len([d for d in done_seen if 0 < d < N_OK + N_BAD]) >= 2, done_seen
        assert moves >= 2, moves

        _, _, got = http("GET", "http://%s/v1/messages/batches/%s" % (api, batch_id))
        counts = json.loads(got)["request_counts"]
        _, _, results = http("GET", "http://%s/v1/messages/batches/%s/results" % (api, batch_id))
        end = scrape(url)
        for result, n in counts.items():
            assert value(end, "satchel_requests", result=result) == n, (result, n)
        assert counts["succeeded"] == N_OK and counts["errored"] == N_BAD, counts
        assert value(end, "satchel_backend_failures", "satchel_backend_failures_total",
                     backend="emulator", **{"class": "invalid_request_error"}) == N_BAD
        assert value(end, "satchel_ingest_bytes", "satchel_ingest_bytes_total") == len(body)
        assert value(end, "satchel_results_bytes", "satchel_results_bytes_total") == len(results)
        inf = value(end, "satchel_backend_attempt_duration_seconds",
                    "satchel_backend_attempt_duration_seconds_bucket", backend="emulator", le="+Inf")
        count = value(end, "satchel_backend_attempt_duration_seconds",
                      "satchel_backend_attempt_duration_seconds_count", backend="emulator")
        assert inf == count == N_OK + N_BAD, (inf, count)
        assert value(end, "satchel_http_requests", "satchel_http_requests_total",
                     route="/v1/messages/batches", method="POST", status="200") == 1
        for name in ("satchel_queue_depth", "satchel_queue_oldest_age_seconds", "satchel_backend_in_flight",
                     "satchel_backend_concurrency_limit", "satchel_store_operation_duration_seconds",
                     "satchel_batch_create_duration_seconds", "satchel_http_request_duration_seconds"):
            assert name in end, name
        print("metrics: %d families parsed by prometheus_client; numbers agree with %s" % (len(end), counts))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main(sys.argv[1])
