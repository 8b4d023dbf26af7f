#!/usr/bin/env python3
"""A tiny stand-in for the Satchel binary, used only to test the conformance suite itself.

    conformance/run.sh conformance/selftest/fake_satchel.py

It accepts the same command line as `satchel serve`, keeps everything in memory (the --db
file is ignored), and follows /work/shared/spec/message-batches-api.md closely enough for
the scenarios to pass. It is not a reference implementation: where the real server and
this file disagree, the spec and the real server win.
"""

import argparse
import json
import random
import re
import sys
import threading
import time
import tomllib
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LOCK = threading.Lock()
BATCHES = {}  # id -> dict
_last_ms = [0]


def b58(n, width):
    out = ""
    for _ in range(width):
        n, r = divmod(n, 58)
        out = B58[r] + out
    return out


def new_id(prefix, sortable=False):
    if sortable:
        with LOCK:
            ms = max(int(time.time() * 1000), _last_ms[0] + 1)  # strictly increasing
            _last_ms[0] = ms
        return prefix + "01" + b58(ms, 9) + "".join(random.choice(B58) for _ in range(13))
    return prefix + "01" + "".join(random.choice(B58) for _ in range(22))


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class ApiError(Exception):
    def __init__(self, status, etype, message):
        super().__init__(message)
        self.status, self.etype, self.message = status, etype, message


def emulate(params, latency):
    time.sleep(latency)
    if not isinstance(params, dict):
        return "errored", "params: Input should be a valid dictionary"
    for field in ("model", "max_tokens", "messages"):
        if field not in params:
            return "errored", f"{field}: Field required"
    if params["max_tokens"] < 1:
        return "errored", "max_tokens: must be greater than or equal to 1"
    last = next((m for m in reversed(params["messages"]) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):
        content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    text = f"You said: {content}"
    tokens = max(1, (len(text) + 3) // 4)
    stop = "end_turn"
    if tokens > params["max_tokens"]:
        tokens, stop, text = params["max_tokens"], "max_tokens", text[: params["max_tokens"] * 4]
    return "succeeded", {
        "id": new_id("msg_"), "type": "message", "role": "assistant", "model": params["model"],
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": max(1, len(content) // 4), "output_tokens": tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "server_tool_use": None, "service_tier": "batch"},
    }


def run_batch(b, latency):
    for i, req in enumerate(b["requests"]):
        with LOCK:
            if b["cancel"]:
                for j in range(i, len(b["requests"])):
                    b["results"][j] = {"type": "canceled"}
                b["counts"]["processing"] -= len(b["requests"]) - i
                b["counts"]["canceled"] += len(b["requests"]) - i
                break
        kind, payload = emulate(req["params"], latency)
        with LOCK:
            if kind == "succeeded":
                b["results"][i] = {"type": "succeeded", "message": payload}
            else:
                b["results"][i] = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": payload}, "request_id": None}}
            b["counts"]["processing"] -= 1
            b["counts"][kind] += 1
    with LOCK:
        b["status"], b["ended_at"] = "ended", datetime.now(timezone.utc)


def view(b, base):
    return {
        "id": b["id"], "type": "message_batch", "processing_status": b["status"],
        "request_counts": dict(b["counts"]), "created_at": ts(b["created_at"]),
        "expires_at": ts(b["created_at"] + timedelta(seconds=b["expiry"])),
        "ended_at": ts(b["ended_at"]) if b["ended_at"] else None,
        "cancel_initiated_at": ts(b["cancel_at"]) if b["cancel_at"] else None,
        "archived_at": None,
        "results_url": f"{base}/v1/messages/batches/{b['id']}/results" if b["status"] == "ended" else None,
    }


def validate_create(body):
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request_error", "Input should be a valid dictionary")
    for k in body:
        if k != "requests":
            raise ApiError(400, "invalid_request_error", f"{k}: Extra inputs are not permitted")
    if "requests" not in body:
        raise ApiError(400, "invalid_request_error", "requests: Field required")
    reqs = body["requests"]
    if len(reqs) < 1:
        raise ApiError(400, "invalid_request_error", "requests: List should have at least 1 item after validation, not 0")
    if len(reqs) > 100000:
        raise ApiError(400, "invalid_request_error", f"requests: List should have at most 100000 items after validation, not {len(reqs)}")
    seen = set()
    for i, r in enumerate(reqs):
        if "custom_id" not in r:
            raise ApiError(400, "invalid_request_error", f"requests.{i}.custom_id: Field required")
        cid = r["custom_id"]
        if len(cid) > 64:
            raise ApiError(400, "invalid_request_error", f"requests.{i}.custom_id: String should have at most 64 characters")
        if not CUSTOM_ID.match(cid):
            raise ApiError(400, "invalid_request_error", f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if "params" not in r:
            raise ApiError(400, "invalid_request_error", f"requests.{i}.params: Field required")
        if cid in seen:
            raise ApiError(400, "invalid_request_error", f"requests: custom_id's must be unique within a batch. Duplicate custom_id found: {cid}")
        seen.add(cid)
    return reqs


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-satchel"

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.command} {self.path} auth={'bearer' if self.headers.get('authorization') else 'x-api-key'}"
                         f" version={self.headers.get('anthropic-version')} beta={self.headers.get('anthropic-beta')}"
                         f" accept={self.headers.get('accept')} -> {args[1] if len(args) > 1 else '?'}\n")

    def send(self, status, body, ctype="application/json"):
        rid = new_id("req_")
        if ctype == "application/json" and isinstance(body, (dict, list)):
            if status >= 400:
                body = {**body, "request_id": rid}
            data = json.dumps(body).encode()
        else:
            data = body
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("request-id", rid)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, etype, message):
        self.send(status, {"type": "error", "error": {"type": etype, "message": message}})

    def handle_any(self, method):
        try:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            self.route(method, raw)
        except ApiError as e:
            self.error(e.status, e.etype, e.message)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def route(self, method, raw):
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if parts[:3] != ["v1", "messages", "batches"] or len(parts) > 5:
            raise ApiError(404, "not_found_error", "Not found")
        key = self.headers.get("x-api-key")
        auth = self.headers.get("authorization") or ""
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:]
        if key is None:
            raise ApiError(401, "authentication_error", "x-api-key header is required")
        if key not in self.server.keys:
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            raise ApiError(400, "invalid_request_error", "anthropic-version: header is required")
        ws = self.server.keys[key]
        base = f"http://{self.headers.get('host')}"
        rest = parts[3:]
        if not rest:
            if method == "POST":
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ApiError(400, "invalid_request_error", f"The request body is not valid JSON: {e}")
                reqs = validate_create(body)
                b = {"id": new_id("msgbatch_", sortable=True), "ws": ws, "requests": reqs, "status": "in_progress",
                     "counts": {"processing": len(reqs), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
                     "created_at": datetime.now(timezone.utc), "ended_at": None, "cancel_at": None,
                     "cancel": False, "results": [None] * len(reqs), "expiry": self.server.expiry}
                with LOCK:
                    BATCHES[b["id"]] = b
                    out = view(b, base)
                threading.Thread(target=run_batch, args=(b, self.server.latency), daemon=True).start()
                return self.send(200, out)
            if method == "GET":
                return self.list(ws, parse_qs(url.query), base)
            raise ApiError(404, "not_found_error", "Not found")
        bid = rest[0]
        with LOCK:
            b = BATCHES.get(bid)
            if b is None or b["ws"] != ws:
                raise ApiError(404, "not_found_error", f"Message Batch {bid} not found.")
            if len(rest) == 1 and method == "GET":
                return self.send(200, view(b, base))
            if len(rest) == 1 and method == "DELETE":
                if b["status"] != "ended":
                    raise ApiError(400, "invalid_request_error",
                                   "In progress batches cannot be deleted. Consider canceling the batch instead.")
                del BATCHES[bid]
                return self.send(200, {"id": bid, "type": "message_batch_deleted"})
            if rest[1:] == ["cancel"] and method == "POST":
                if b["status"] == "in_progress":
                    b["cancel"], b["status"], b["cancel_at"] = True, "canceling", datetime.now(timezone.utc)
                return self.send(200, view(b, base))
            if rest[1:] == ["results"] and method == "GET":
                if b["status"] != "ended":
                    raise ApiError(404, "not_found_error", f"Message Batch {bid} has no available results.")
                lines = [json.dumps({"custom_id": r["custom_id"], "result": res}, separators=(",", ":"))
                         for r, res in zip(b["requests"], b["results"])]
                return self.send(200, "".join(l + "\n" for l in lines).encode(), "application/x-jsonl")
        raise ApiError(404, "not_found_error", "Not found")

    def list(self, ws, q, base):
        limit = int(q.get("limit", ["20"])[0])
        after, before = q.get("after_id", [None])[0], q.get("before_id", [None])[0]
        if not 1 <= limit <= 1000:
            raise ApiError(400, "invalid_request_error", "limit: must be between 1 and 1000")
        if after and before:
            raise ApiError(400, "invalid_request_error", "after_id and before_id cannot both be set")
        with LOCK:
            ids = sorted((i for i, b in BATCHES.items() if b["ws"] == ws), reverse=True)
            if after:
                older = [i for i in ids if i < after]
                page, more = older[:limit], len(older) > limit
            elif before:
                newer = [i for i in ids if i > before]
                page, more = newer[-limit:], len(newer) > limit
            else:
                page, more = ids[:limit], len(ids) > limit
            data = [view(BATCHES[i], base) for i in page]
        self.send(200, {"data": data, "has_more": more, "first_id": page[0] if page else None,
                        "last_id": page[-1] if page else None})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["serve"])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--db")
    ap.add_argument("--config", required=True)
    ap.add_argument("--emulator-latency", default="1s")
    ap.add_argument("--expiry", default="24h")
    a = ap.parse_args()
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    host, port = a.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    srv.keys = {k["key"]: k["workspace"] for k in cfg["api_keys"]}
    srv.latency = duration(a.emulator_latency)
    srv.expiry = duration(a.expiry)
    print(f"fake satchel listening on {a.listen}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
