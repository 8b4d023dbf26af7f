"""The webhook scenarios against real processes: `satchel serve` and receiver.py. Batches
are created and read with the official Python SDK.

    python scenario.py SATCHEL_BINARY
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import anthropic

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = sys.argv[1]
WORK = tempfile.mkdtemp(prefix="satchel-webhooks-")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=60):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


class Receiver:
    def __init__(self, port, script=""):
        self.log = os.path.join(WORK, "receiver-%d-%f.jsonl" % (port, time.time()))
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "receiver.py"), str(port), SECRET,
                                      self.log, script])
        wait_until("the receiver", lambda: self._listening(port))

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def got(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            records = [json.loads(line) for line in f]
        for r in records:
            assert r["verified"], "a delivery failed verification: %r" % r
        return records

    def wait_for(self, n):
        return wait_until("%d webhook requests" % n, lambda: (lambda g: g if len(g) >= n else None)(self.got()))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Server:
    def __init__(self, db, config, *args):
        self.port = free_port()
        self.log = open(os.path.join(WORK, "server-%d.log" % self.port), "w")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:%d" % self.port, "--db", db,
                                      "--config", config, *args], stderr=self.log, stdout=subprocess.DEVNULL)
        self.sdk = anthropic.Anthropic(base_url="http://127.0.0.1:%d" % self.port, api_key="k", max_retries=5)
        wait_until("the server", lambda: Receiver._listening(self.port))

    def run_batch(self, n=2):
        batch = self.sdk.messages.batches.create(requests=[
            {"custom_id": "r%d" % i, "params": {"model": "claude-test", "max_tokens": 8,
                                                 "messages": [{"role": "user", "content": "hi"}]}}
            for i in range(n)])
        return wait_until("the batch to end", lambda: (lambda b: b if b.processing_status == "ended" else None)(
            self.sdk.messages.batches.retrieve(batch.id)))

    def deliveries(self, batch_id):
        request = urllib.request.Request(
            "http://127.0.0.1:%d/v1/satchel/webhooks/deliveries?batch_id=%s" % (self.port, batch_id),
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["data"]

    def kill_9(self):
        self.proc.kill()
        self.proc.wait()


def config(name, url, allow=True):
    path = os.path.join(WORK, name + ".toml")
    with open(path, "w") as f:
        f.write('[webhook_delivery]\ninitial_backoff = "200ms"\nmax_backoff = "2s"\n'
                '[[webhooks]]\nurl = "%s"\nsecret = "%s"\nevents = ["message_batch.ended"]\n'
                'allow_private_targets = %s\n' % (url, SECRET, "true" if allow else "false"))
    return path


def check_event(record, batch):
    assert record["type"] == "event" and record["data_type"] == "message_batch.ended", record
    assert record["batch_id"] == batch.id and record["workspace_id"] == "default", record
    assert record["event_id"] == record["webhook_id"], record
    assert abs(anthropic._utils.parse_datetime(record["created_at"]).timestamp() - batch.ended_at.timestamp()) < 1e-3


def delivered():
    port = free_port()
    receiver = Receiver(port)
    server = Server(os.path.join(WORK, "a.db"), config("a", "http://127.0.0.1:%d/hook" % port))
    try:
        batch = server.run_batch()
        got = receiver.wait_for(1)
        check_event(got[0], batch)
        log = wait_until("delivered in the log", lambda: [d for d in server.deliveries(batch.id) if d["status"] == "delivered"])
        assert log[0]["event_id"] == got[0]["webhook_id"] and log[0]["attempts"] == 1, log
        print("webhooks: a batch that ends arrives, verified by the SDK's unwrap and standardwebhooks")
    finally:
        server.kill_9()
        receiver.stop()


def retried():
    port = free_port()
    receiver = Receiver(port, "500,429,500")
    server = Server(os.path.join(WORK, "b.db"), config("b", "http://127.0.0.1:%d/hook" % port))
    try:
        batch = server.run_batch()
        got = receiver.wait_for(4)
        assert [r["answered"] for r in got] == [500, 429, 500, 200], got
        assert len({r["webhook_id"] for r in got}) == 1, "one webhook-id across retries"
        assert len({r["payload"] for r in got}) == 1, "one body across retries"
        check_event(got[-1], batch)
        log = wait_until("delivered in the log", lambda: [d for d in server.deliveries(batch.id) if d["status"] == "delivered"])
        assert log[0]["attempts"] == 4, log
        print("webhooks: 500, 429, 500 retried, then delivered with the same webhook-id")
    finally:
        server.kill_9()
        receiver.stop()


def refused():
    port = free_port()
    receiver = Receiver(port)
    server = Server(os.path.join(WORK, "c.db"), config("c", "http://localhost:%d/hook" % port, allow=False))
    try:
        batch = server.run_batch()
        log = wait_until("failed in the log", lambda: [d for d in server.deliveries(batch.id) if d["status"] == "failed"])
        assert "private" in log[0]["last_error"], log
        assert receiver.got() == [], "nothing reached the loopback receiver"
        print("webhooks: a loopback target is refused when not allowed: %s" % log[0]["last_error"])
    finally:
        server.kill_9()
        receiver.stop()


def survives_kill_9():
    port = free_port()  # the receiver is down at first
    db, cfg = os.path.join(WORK, "d.db"), config("d", "http://127.0.0.1:%d/hook" % port)
    server = Server(db, cfg)
    batch = server.run_batch()
    pending = wait_until("a failed first attempt", lambda: [d for d in server.deliveries(batch.id)
                                                             if d["status"] == "pending" and d["attempts"] >= 1
                                                             and d["last_error"]])
    server.kill_9()
    receiver = Receiver(port)
    server = Server(db, cfg)
    try:
        got = receiver.wait_for(1)
        check_event(got[0], batch)
        assert got[0]["webhook_id"] == pending[0]["event_id"], (got, pending)
        print("webhooks: the event recorded before kill -9 arrives after the restart")
    finally:
        server.kill_9()
        receiver.stop()


if __name__ == "__main__":
    delivered()
    retried()
    refused()
    survives_kill_9()
    print("webhooks: all scenarios passed")
