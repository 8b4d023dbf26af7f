#!/usr/bin/env python3
"""Satchel conformance scenario for the official Anthropic Python SDK.

Runs unchanged with anthropic 0.125.0 (x-api-key, anthropic-version 2023-06-01, httpx) and
anthropic 2.14.0 (Authorization: Bearer, anthropic-version 2026-10-21, httpx2).

    SATCHEL_BASE_URL=http://127.0.0.1:PORT python conformance/python/scenario.py

The server must have the keys sk-conf-a (workspace team-a) and sk-conf-b (workspace team-b)
and emulate ~1 s of latency per request. Prints one line per check; exits 1 on the first
failed check.
"""

import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
from datetime import timedelta

import anthropic
import jsonschema
from anthropic.types.messages import MessageBatchIndividualResponse

BASE_URL = os.environ["SATCHEL_BASE_URL"].rstrip("/")
KEY_A, KEY_B = "sk-conf-a", "sk-conf-b"
SDK = f"python anthropic=={anthropic.__version__}"
SDK_MAJOR = int(anthropic.__version__.split(".")[0])
MODEL = "claude-test-1"

BATCH_KEYS = {"id", "type", "processing_status", "request_counts", "created_at", "expires_at",
              "ended_at", "cancel_initiated_at", "archived_at", "results_url"}
COUNT_KEYS = {"processing", "succeeded", "errored", "canceled", "expired"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
POLL_TIMEOUT = 60.0

passed = 0


class CheckFailed(Exception):
    pass


def check(name, cond, detail=""):
    """Record one check: print it, or raise CheckFailed with the detail."""
    global passed
    if not cond:
        raise CheckFailed(f"{name}: {detail}" if detail != "" else name)
    passed += 1
    print(f"  ok  {name}", flush=True)


def section(title):
    print(f"--- {title}", flush=True)


OTHER_BASE_URL = os.environ.get("SATCHEL_OTHER_BASE_URL", "").rstrip("/")


class Alternating:
    """Several nodes sharing one store, seen as one client: each call (each attribute taken
    from the client, as in `c.messages.batches.retrieve(...)`) goes to the next node."""

    def __init__(self, clients):
        self._clients = clients
        self._next = 0

    def __getattr__(self, name):
        c = self._clients[self._next % len(self._clients)]
        self._next += 1
        return getattr(c, name)


def client(key=KEY_A):
    urls = [BASE_URL] + ([OTHER_BASE_URL] if OTHER_BASE_URL else [])
    clients = [anthropic.Anthropic(api_key=key, base_url=u, _strict_response_validation=True, max_retries=0)
               for u in urls]
    return clients[0] if len(clients) == 1 else Alternating(clients)


def params(text="Hello, world", max_tokens=64, **overrides):
    p = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    p.update(overrides)
    return {k: v for k, v in p.items() if v is not None}


def http(method, url, headers=None, auth=True):
    """A plain HTTP call (no SDK); returns (status, headers, body bytes)."""
    if not url.startswith("http"):
        url = BASE_URL + url
    h = {"x-api-key": KEY_A, "anthropic-version": "2023-06-01"} if auth else {}
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    req = urllib.request.Request(url, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def check_raw_error(name, status, headers, body, want_status, want_type, want_message=None):
    check(f"{name}: HTTP {want_status}", status == want_status, f"got {status}: {body[:300]!r}")
    doc = json.loads(body)
    check(f"{name}: error envelope", doc.get("type") == "error" and isinstance(doc.get("error"), dict), doc)
    check(f"{name}: error.type {want_type}", doc["error"].get("type") == want_type, doc)
    if want_message is not None:
        check(f"{name}: message", doc["error"].get("message") == want_message,
              f"want {want_message!r}, got {doc['error'].get('message')!r}")
    rid = headers.get("request-id") or ""
    check(f"{name}: request-id header", rid.startswith("req_"), rid)
    check(f"{name}: body request_id == header", doc.get("request_id") == rid, f"{doc.get('request_id')!r} vs {rid!r}")
    return doc


def expect_error(name, exc_class, status, etype, message, fn):
    """Call fn, expecting the SDK to raise exc_class for an HTTP error with this status/type/message."""
    try:
        fn()
    except exc_class as e:
        check(f"{name}: raises {exc_class.__name__}", True)
        check(f"{name}: status {status}", e.status_code == status, e.status_code)
        body = e.body if isinstance(e.body, dict) else e.response.json()
        err = body.get("error") or {}
        check(f"{name}: error.type {etype}", err.get("type") == etype, body)
        if message is not None:
            check(f"{name}: message", err.get("message") == message,
                  f"want {message!r}, got {err.get('message')!r}")
        check(f"{name}: request-id", (e.request_id or "").startswith("req_") and body.get("request_id") == e.request_id,
              f"header {e.request_id!r}, body {body.get('request_id')!r}")
        return e
    except Exception as e:  # a different exception class is a failure with a useful message
        raise CheckFailed(f"{name}: expected {exc_class.__name__}, got {type(e).__name__}: {e}") from e
    raise CheckFailed(f"{name}: expected {exc_class.__name__}, but the call succeeded")


def counts(b):
    c = b.request_counts
    return {"processing": c.processing, "succeeded": c.succeeded, "errored": c.errored,
            "canceled": c.canceled, "expired": c.expired}


def wait_ended(c, batch_id, total):
    """Poll retrieve until the batch ends, checking invariants on every poll."""
    deadline = time.monotonic() + POLL_TIMEOUT
    polls, last_processing = 0, total
    while True:
        b = c.messages.batches.retrieve(batch_id)
        polls += 1
        n = counts(b)
        if sum(n.values()) != total:
            raise CheckFailed(f"poll {batch_id}: counts {n} do not sum to {total}")
        if n["processing"] > last_processing:
            raise CheckFailed(f"poll {batch_id}: processing went up {last_processing} -> {n['processing']}")
        last_processing = n["processing"]
        if b.processing_status == "ended":
            check(f"batch ended after {polls} polls", True)
            return b
        if b.processing_status not in ("in_progress", "canceling"):
            raise CheckFailed(f"poll {batch_id}: bad processing_status {b.processing_status!r}")
        if b.results_url is not None:
            raise CheckFailed(f"poll {batch_id}: results_url set before ended: {b.results_url}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"batch {batch_id} did not end within {POLL_TIMEOUT:.0f}s (last: {n})")
        time.sleep(0.2)


def check_raw_batch(name, doc):
    check(f"{name}: exactly the ten MessageBatch keys", set(doc) == BATCH_KEYS, sorted(doc))
    check(f"{name}: request_counts keys", set(doc["request_counts"]) == COUNT_KEYS, sorted(doc["request_counts"]))
    check(f"{name}: counts are integers", all(type(v) is int for v in doc["request_counts"].values()),
          doc["request_counts"])
    for k in ("created_at", "expires_at", "ended_at", "cancel_initiated_at", "archived_at"):
        v = doc[k]
        if v is not None:
            check(f"{name}: {k} format", bool(TIMESTAMP.match(v)), v)


# --------------------------------------------------------------------------------------------

def main():
    print(f"=== {SDK} against {BASE_URL}" + (f" and {OTHER_BASE_URL}, alternating" if OTHER_BASE_URL else ""),
          flush=True)
    a = client()
    created = []

    # ---- create -------------------------------------------------------------------------
    section("create")
    long_text = "Please write a long answer about batches. " * 20
    reqs = [
        {"custom_id": "req-ok", "params": params()},
        {"custom_id": "req-bad", "params": params(max_tokens=None)},  # missing max_tokens
        {"custom_id": "req-short", "params": params(long_text, max_tokens=1)},
    ]
    b = a.messages.batches.create(requests=reqs)
    bid = b.id
    created.append(bid)
    print(f"      batch {bid}")
    check("id starts msgbatch_", bid.startswith("msgbatch_"), bid)
    check("type message_batch", b.type == "message_batch", b.type)
    check("processing_status in_progress", b.processing_status == "in_progress", b.processing_status)
    check("request_counts processing=3, others 0",
          counts(b) == {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}, counts(b))
    check("results_url null", b.results_url is None, b.results_url)
    check("ended_at null", b.ended_at is None, b.ended_at)
    check("cancel_initiated_at null", b.cancel_initiated_at is None, b.cancel_initiated_at)
    check("archived_at null", b.archived_at is None, b.archived_at)
    check("expires_at == created_at + 24h", b.expires_at - b.created_at == timedelta(hours=24),
          f"{b.created_at} -> {b.expires_at}")

    # ---- while in progress (the server takes ~1 s per request) ----------------------------
    section("in progress")
    expect_error("delete in_progress", anthropic.BadRequestError, 400, "invalid_request_error",
                 "In progress batches cannot be deleted. Consider canceling the batch instead.",
                 lambda: a.messages.batches.delete(bid))
    try:
        a.messages.batches.results(bid)
        raise CheckFailed("results() of an in-progress batch: expected AnthropicError (no results_url)")
    except anthropic.APIStatusError as e:
        raise CheckFailed(f"results() of an in-progress batch: expected a client-side error, got HTTP {e.status_code}")
    except anthropic.AnthropicError as e:
        check("SDK results() refuses without results_url", "results_url" in str(e), str(e))
    status, headers, body = http("GET", f"/v1/messages/batches/{bid}/results")
    check_raw_error("raw results before end", status, headers, body, 404, "not_found_error",
                    f"Message Batch {bid} has no available results.")

    # ---- raw JSON of retrieve ----------------------------------------------------------------
    section("raw retrieve")
    raw = a.messages.batches.with_raw_response.retrieve(bid)
    doc = raw.http_response.json()
    check_raw_batch("retrieve", doc)
    check("retrieve: id echoes", doc["id"] == bid, doc["id"])
    check("retrieve: null keys present as null",
          all(doc[k] is None for k in ("ended_at", "cancel_initiated_at", "archived_at", "results_url")), doc)
    check("retrieve: request-id header req_", (raw.headers.get("request-id") or "").startswith("req_"),
          raw.headers.get("request-id"))
    ctype = raw.headers.get("content-type") or ""
    check("retrieve: content-type application/json", ctype.split(";")[0].strip() == "application/json", ctype)
    parsed = raw.parse()
    check("retrieve: raw parse() gives MessageBatch", parsed.id == bid, parsed)
    sent = raw.http_request.headers
    print(f"      SDK sent: authorization={'Bearer …' if sent.get('authorization') else None} "
          f"x-api-key={'set' if sent.get('x-api-key') else None} anthropic-version={sent.get('anthropic-version')}")
    if SDK_MAJOR >= 2:
        check("SDK authenticated with Authorization: Bearer",
              sent.get("authorization") == f"Bearer {KEY_A}" and sent.get("x-api-key") is None, dict(sent))
        check("SDK sent anthropic-version 2026-10-21", sent.get("anthropic-version") == "2026-10-21",
              sent.get("anthropic-version"))
    elif SDK_MAJOR == 0:
        check("SDK authenticated with x-api-key",
              sent.get("x-api-key") == KEY_A and sent.get("authorization") is None, dict(sent))
        check("SDK sent anthropic-version 2023-06-01", sent.get("anthropic-version") == "2023-06-01",
              sent.get("anthropic-version"))

    # ---- poll until ended ---------------------------------------------------------------------
    section("poll until ended")
    b = wait_ended(a, bid, 3)
    n = counts(b)
    check("counts succeeded=2 errored=1 (sum 3)",
          n == {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}, n)
    check("ended_at set", b.ended_at is not None and b.ended_at >= b.created_at, b.ended_at)
    check("cancel_initiated_at still null", b.cancel_initiated_at is None, b.cancel_initiated_at)
    check("results_url absolute", bool(re.match(r"^https?://[^/]+/", b.results_url or "")), b.results_url)
    check("results_url ends /v1/messages/batches/<id>/results",
          (b.results_url or "").endswith(f"/v1/messages/batches/{bid}/results"), b.results_url)
    check_raw_batch("ended retrieve", a.messages.batches.with_raw_response.retrieve(bid).http_response.json())
    results_url = b.results_url

    # ---- results through the SDK --------------------------------------------------------------
    section("results (SDK)")
    lines = list(a.messages.batches.results(bid))
    check("results: exactly 3 lines", len(lines) == 3, len(lines))
    check("results: submission order", [r.custom_id for r in lines] == ["req-ok", "req-bad", "req-short"],
          [r.custom_id for r in lines])
    ok, bad, short = lines
    check("req-ok: succeeded", ok.result.type == "succeeded", ok.result.type)
    m = ok.result.message
    check("req-ok: message.id msg_", m.id.startswith("msg_"), m.id)
    check("req-ok: type message, role assistant", m.type == "message" and m.role == "assistant", (m.type, m.role))
    check("req-ok: model echoed", m.model == MODEL, m.model)
    check("req-ok: stop_reason end_turn", m.stop_reason == "end_turn", m.stop_reason)
    check("req-ok: stop_sequence null", m.stop_sequence is None, m.stop_sequence)
    check("req-ok: content[0] is text", len(m.content) >= 1 and m.content[0].type == "text", m.content)
    check("req-ok: text non-empty", bool(m.content[0].text), m.content[0])
    check("req-ok: usage tokens", m.usage.output_tokens >= 1 and m.usage.input_tokens >= 0, m.usage)
    check("req-bad: errored", bad.result.type == "errored", bad.result.type)
    check("req-bad: error envelope type error", bad.result.error.type == "error", bad.result.error)
    check("req-bad: invalid_request_error", bad.result.error.error.type == "invalid_request_error",
          bad.result.error.error)
    check("req-bad: message 'max_tokens: Field required'",
          bad.result.error.error.message == "max_tokens: Field required", bad.result.error.error.message)
    check("req-short: succeeded", short.result.type == "succeeded", short.result.type)
    sm = short.result.message
    check("req-short: stop_reason max_tokens", sm.stop_reason == "max_tokens", sm.stop_reason)
    check("req-short: usage.output_tokens == 1", sm.usage.output_tokens == 1, sm.usage)
    check("req-short: model echoed", sm.model == MODEL, sm.model)

    # ---- results raw --------------------------------------------------------------------------
    section("results (raw)")
    status, headers, body = http("GET", results_url)
    check("raw results: 200", status == 200, f"{status} {body[:300]!r}")
    ctype = headers.get("content-type") or ""
    check("raw results: content-type application/x-jsonl", ctype.startswith("application/x-jsonl"), ctype)
    check("raw results: request-id", (headers.get("request-id") or "").startswith("req_"), headers.get("request-id"))
    text = body.decode()
    check("raw results: ends with newline", text.endswith("\n"), repr(text[-50:]))
    check("raw results: no CR", "\r" not in text)
    raw_lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    check("raw results: 3 lines, no blank line", len(raw_lines) == 3 and all(l.strip() for l in raw_lines), raw_lines)
    for line in raw_lines:
        obj = json.loads(line)
        check(f"raw results: {obj.get('custom_id')} keys custom_id,result", set(obj) == {"custom_id", "result"},
              sorted(obj))
        try:
            MessageBatchIndividualResponse.model_validate(obj)  # strict pydantic validation
        except Exception as e:
            raise CheckFailed(f"raw results: {obj.get('custom_id')} fails strict schema validation: {e}")
        check(f"raw results: {obj['custom_id']} validates strictly", True)
    ok_raw = json.loads(raw_lines[0])["result"]["message"]
    check("raw results: text block has citations null",
          ok_raw["content"][0].get("citations", "absent") is None, ok_raw["content"][0])
    for accept in ("application/binary", "application/x-jsonl", "application/json", "*/*"):
        status, _, body2 = http("GET", f"/v1/messages/batches/{bid}/results", {"accept": accept})
        check(f"raw results at canonical path, Accept {accept}", status == 200 and body2 == body, status)
    status, _, body2 = http("GET", f"/v1/messages/batches/{bid}/results?beta=true",
                            {"anthropic-beta": "message-batches-2024-09-24"})
    check("raw results ignores ?beta=true and anthropic-beta", status == 200 and body2 == body, status)

    # ---- list and pagination ------------------------------------------------------------------
    section("list")
    for i in range(4):
        time.sleep(0.01)  # distinct creation instants
        nb = a.messages.batches.create(requests=[{"custom_id": f"list-{i}", "params": params(f"list {i}")}])
        created.append(nb.id)
    seen = [x.id for x in a.messages.batches.list(limit=2)]
    check("auto-pagination: all created ids present", set(created) <= set(seen), set(created) - set(seen))
    check("auto-pagination: no duplicates", len(seen) == len(set(seen)), seen)
    check("auto-pagination: ids strictly descending (newest first)", seen == sorted(seen, reverse=True), seen)
    mine = [x for x in seen if x in created]
    check("auto-pagination: my batches newest first", mine == list(reversed(created)), mine)
    all_batches = list(a.messages.batches.list(limit=100))
    check("list: created_at non-increasing",
          all(x.created_at >= y.created_at for x, y in zip(all_batches, all_batches[1:])),
          [str(x.created_at) for x in all_batches])
    page1 = a.messages.batches.list(limit=2)
    ids1 = [x.id for x in page1.data]
    check("page 1: 2 items", len(ids1) == 2, ids1)
    check("page 1: has_more true", page1.has_more is True, page1.has_more)
    check("page 1: first_id/last_id match data", page1.first_id == ids1[0] and page1.last_id == ids1[-1],
          (page1.first_id, page1.last_id, ids1))
    check("page 1: is the newest", ids1 == seen[:2], (ids1, seen[:2]))
    page2 = a.messages.batches.list(limit=2, after_id=page1.last_id)
    ids2 = [x.id for x in page2.data]
    check("after_id page: the next older ids", ids2 == seen[2:4], (ids2, seen[2:4]))
    check("after_id page: first_id/last_id", page2.first_id == ids2[0] and page2.last_id == ids2[-1],
          (page2.first_id, page2.last_id))
    check("after_id page: has_more", page2.has_more == (len(seen) > 4), (page2.has_more, len(seen)))
    back = a.messages.batches.list(limit=2, before_id=page2.first_id)
    check("before_id page: returns the newer page", [x.id for x in back.data] == ids1, ([x.id for x in back.data], ids1))
    check("before_id page: has_more false at the newest end", back.has_more is False, back.has_more)
    mid = a.messages.batches.list(limit=2, before_id=seen[4])
    check("before_id page: the 2 batches just newer than the cursor", [x.id for x in mid.data] == seen[2:4],
          ([x.id for x in mid.data], seen[2:4]))
    check("before_id page: has_more true when newer ones remain", mid.has_more is True, mid.has_more)
    check("SDK previous-page paging follows before_id",
          [x.id for x in mid.get_next_page().data] == seen[0:2] if mid.has_next_page() else False)
    check("SDK next page follows after_id", [x.id for x in page1.get_next_page().data] == ids2)
    raw = a.messages.batches.with_raw_response.list(limit=2)
    env = raw.http_response.json()
    check("raw list: exactly data,has_more,first_id,last_id", set(env) == {"data", "has_more", "first_id", "last_id"},
          sorted(env))
    check("raw list: content-type json", (raw.headers.get("content-type") or "").startswith("application/json"),
          raw.headers.get("content-type"))
    for item in env["data"]:
        check_raw_batch("raw list item", item)
    expect_error("list limit=0", anthropic.BadRequestError, 400, "invalid_request_error", None,
                 lambda: a.messages.batches.list(limit=0))
    expect_error("list limit=1001", anthropic.BadRequestError, 400, "invalid_request_error", None,
                 lambda: a.messages.batches.list(limit=1001))
    between = a.messages.batches.list(after_id=seen[0], before_id=seen[3])
    check("list with both cursors: the batches strictly between them", [x.id for x in between.data] == seen[1:3],
          ([x.id for x in between.data], seen[1:3]))

    # ---- workspace isolation ------------------------------------------------------------------
    section("workspace isolation")
    bcl = client(KEY_B)
    expect_error("team-b retrieve of team-a batch", anthropic.NotFoundError, 404, "not_found_error",
                 f"Message Batch {bid} not found.", lambda: bcl.messages.batches.retrieve(bid))
    expect_error("team-b cancel of team-a batch", anthropic.NotFoundError, 404, "not_found_error",
                 f"Message Batch {bid} not found.", lambda: bcl.messages.batches.cancel(bid))
    expect_error("team-b delete of team-a batch", anthropic.NotFoundError, 404, "not_found_error",
                 f"Message Batch {bid} not found.", lambda: bcl.messages.batches.delete(bid))
    b_ids = {x.id for x in bcl.messages.batches.list(limit=1000)}
    check("team-b list has none of team-a's batches", not (b_ids & set(seen)), b_ids & set(seen))
    check("team-a batch unaffected", a.messages.batches.retrieve(bid).processing_status == "ended")

    # ---- beta resource ------------------------------------------------------------------------
    section("beta resource")
    bb = a.beta.messages.batches.retrieve(bid)
    check("beta retrieve", bb.id == bid and bb.processing_status == "ended", bb)
    bb = a.beta.messages.batches.retrieve(bid, betas=["message-batches-2024-09-24"])
    check("beta retrieve with anthropic-beta header", bb.id == bid, bb)
    raw = a.beta.messages.batches.with_raw_response.retrieve(bid, betas=["message-batches-2024-09-24"])
    print(f"      beta request: {raw.http_request.url} anthropic-beta={raw.http_request.headers.get('anthropic-beta')}")
    check("beta raw retrieve keys", set(raw.http_response.json()) == BATCH_KEYS)
    bl = a.beta.messages.batches.list(limit=2)
    check("beta list", [x.id for x in bl.data] == ids1, [x.id for x in bl.data])
    beta_lines = list(a.beta.messages.batches.results(bid))
    check("beta results", [r.custom_id for r in beta_lines] == ["req-ok", "req-bad", "req-short"],
          [r.custom_id for r in beta_lines])

    # ---- cancel -------------------------------------------------------------------------------
    section("cancel")
    big = [{"custom_id": f"big-{i:04d}", "params": params(f"item {i}", max_tokens=8)} for i in range(3000)]
    cb = a.messages.batches.create(requests=big)
    cid = cb.id
    created.append(cid)
    check("3000-request batch: processing=3000", counts(cb)["processing"] == 3000, counts(cb))
    c1 = a.messages.batches.cancel(cid)
    check("cancel: status canceling (or ended)", c1.processing_status in ("canceling", "ended"), c1.processing_status)
    check("cancel: cancel_initiated_at set", c1.cancel_initiated_at is not None, c1.cancel_initiated_at)
    check("cancel: counts still sum to 3000", sum(counts(c1).values()) == 3000, counts(c1))
    check("cancel: results_url null unless ended",
          (c1.results_url is None) == (c1.processing_status != "ended"), c1.results_url)
    ended = wait_ended(a, cid, 3000)
    n = counts(ended)
    print(f"      counts after cancel: {n}")
    check("canceled batch: sum 3000, nothing processing", sum(n.values()) == 3000 and n["processing"] == 0, n)
    check("canceled batch: canceled > 0", n["canceled"] > 0, n)
    check("canceled batch: no expired", n["expired"] == 0, n)
    check("canceled batch: cancel_initiated_at kept", ended.cancel_initiated_at == c1.cancel_initiated_at,
          (ended.cancel_initiated_at, c1.cancel_initiated_at))
    check("canceled batch: ended_at >= cancel_initiated_at", ended.ended_at >= ended.cancel_initiated_at,
          (ended.ended_at, ended.cancel_initiated_at))
    big_lines = list(a.messages.batches.results(cid))
    check("canceled batch: 3000 result lines", len(big_lines) == 3000, len(big_lines))
    check("canceled batch: lines in submission order",
          [r.custom_id for r in big_lines] == [r["custom_id"] for r in big])
    kinds = {}
    for r in big_lines:
        kinds[r.result.type] = kinds.get(r.result.type, 0) + 1
    check("canceled batch: canceled lines present", kinds.get("canceled", 0) > 0, kinds)
    check("canceled batch: line kinds match counts",
          all(kinds.get(k, 0) == n[k] for k in ("succeeded", "errored", "canceled", "expired")), (kinds, n))
    again = a.messages.batches.cancel(cid)
    check("cancel again: 200, unchanged", again.model_dump() == ended.model_dump(),
          f"{again.model_dump()} vs {ended.model_dump()}")
    raw = a.messages.batches.with_raw_response.cancel(cid)
    check_raw_batch("raw cancel", raw.http_response.json())

    # ---- delete -------------------------------------------------------------------------------
    section("delete")
    d = a.messages.batches.delete(cid)
    check("delete: id", d.id == cid, d)
    check("delete: type message_batch_deleted", d.type == "message_batch_deleted", d.type)
    created.remove(cid)
    gone = f"Message Batch {cid} not found."
    expect_error("retrieve deleted", anthropic.NotFoundError, 404, "not_found_error", gone,
                 lambda: a.messages.batches.retrieve(cid))
    expect_error("results() of deleted", anthropic.NotFoundError, 404, "not_found_error", gone,
                 lambda: list(a.messages.batches.results(cid)))
    expect_error("cancel deleted", anthropic.NotFoundError, 404, "not_found_error", gone,
                 lambda: a.messages.batches.cancel(cid))
    expect_error("delete deleted", anthropic.NotFoundError, 404, "not_found_error", gone,
                 lambda: a.messages.batches.delete(cid))
    status, headers, body = http("GET", f"/v1/messages/batches/{cid}/results")
    check_raw_error("raw results of deleted", status, headers, body, 404, "not_found_error", gone)
    check("deleted batch not listed", cid not in {x.id for x in a.messages.batches.list(limit=1000)})

    # ---- unknown ids --------------------------------------------------------------------------
    section("unknown ids")
    for unknown in ("msgbatch_01doesnotexist", "nope"):
        expect_error(f"retrieve {unknown}", anthropic.NotFoundError, 404, "not_found_error",
                     f"Message Batch {unknown} not found.", lambda: a.messages.batches.retrieve(unknown))
        expect_error(f"cancel {unknown}", anthropic.NotFoundError, 404, "not_found_error",
                     f"Message Batch {unknown} not found.", lambda: a.messages.batches.cancel(unknown))
        expect_error(f"delete {unknown}", anthropic.NotFoundError, 404, "not_found_error",
                     f"Message Batch {unknown} not found.", lambda: a.messages.batches.delete(unknown))

    # ---- create validation --------------------------------------------------------------------
    section("create validation")
    newest_before = a.messages.batches.list(limit=1).first_id
    one = params()
    cases = [
        ("duplicate custom_id", [{"custom_id": "dup", "params": one}, {"custom_id": "dup", "params": one}],
         "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup"),
        ("custom_id bad characters", [{"custom_id": "ok", "params": one}, {"custom_id": "a.b", "params": one}],
         "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
        ("custom_id 65 chars", [{"custom_id": "x" * 65, "params": one}],
         "requests.0.custom_id: String should have at most 64 characters"),
        ("empty requests", [], "requests: List should have at least 1 item after validation, not 0"),
    ]
    for name, requests, message in cases:
        expect_error(name, anthropic.BadRequestError, 400, "invalid_request_error", message,
                     lambda: a.messages.batches.create(requests=requests))
    check("rejected creates made no batch", a.messages.batches.list(limit=1).first_id == newest_before)

    # ---- auth, headers, routes (raw HTTP) -----------------------------------------------------
    section("auth and headers")
    expect_error("bad api key", anthropic.AuthenticationError, 401, "authentication_error", None,
                 lambda: client("sk-wrong").messages.batches.retrieve(bid))
    expect_error("bad api key on list", anthropic.AuthenticationError, 401, "authentication_error", None,
                 lambda: client("sk-wrong").messages.batches.list())
    status, headers, body = http("GET", "/v1/messages/batches", {"anthropic-version": "2023-06-01"}, auth=False)
    check_raw_error("no key", status, headers, body, 401, "authentication_error", "x-api-key header is required")
    status, headers, body = http("GET", f"/v1/messages/batches/{bid}", {"x-api-key": KEY_A, "anthropic-version": None})
    check_raw_error("no anthropic-version", status, headers, body, 400, "invalid_request_error",
                    "anthropic-version: header is required")
    status, _, body = http("GET", f"/v1/messages/batches/{bid}",
                           {"x-api-key": None, "authorization": f"Bearer {KEY_A}", "anthropic-version": "2026-10-21"})
    check("raw Authorization: Bearer + 2026-10-21 accepted", status == 200 and json.loads(body)["id"] == bid, status)
    status, _, body = http("GET", f"/v1/messages/batches/{bid}", {"anthropic-version": "2023-06-01"})
    check("raw x-api-key + 2023-06-01 accepted", status == 200 and json.loads(body)["id"] == bid, status)
    status, headers, body = http("GET", "/v1/_stainless_unknown_path")
    check_raw_error("unknown route", status, headers, body, 404, "not_found_error")

    # ---- the emulator's reply shapes, through the beta namespace -------------------------------
    section("emulator reply shapes (beta create, strict models)")
    weather_schema = {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"],
        "additionalProperties": False}
    person_schema = {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1}, "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "required": ["name", "age", "tags"], "additionalProperties": False}
    tool = {"name": "get_weather", "description": "Weather by city", "input_schema": weather_schema}
    shape_requests = [
        {"custom_id": "forced-tool", "params": params("Weather in Oslo?", max_tokens=256, tools=[tool],
                                                     tool_choice={"type": "tool", "name": "get_weather"})},
        {"custom_id": "any-tool", "params": params("Anything", max_tokens=256, tools=[tool],
                                                  tool_choice={"type": "any"})},
        {"custom_id": "structured", "params": params("Ann", max_tokens=512, output_config={
            "format": {"type": "json_schema", "schema": person_schema}})},
        {"custom_id": "thinking", "params": params("Why?", max_tokens=2048,
                                                  thinking={"type": "enabled", "budget_tokens": 1024})},
        {"custom_id": "extra-key", "params": params("x", foo_bar=1)},
    ]
    sb = a.beta.messages.batches.create(requests=shape_requests, betas=["message-batches-2024-09-24"])
    check("beta create", sb.id.startswith("msgbatch_") and sb.processing_status == "in_progress", sb)
    created.append(sb.id)
    wait_ended(a, sb.id, len(shape_requests))
    by_id = {r.custom_id: r for r in a.messages.batches.results(sb.id)}
    for name in ("forced-tool", "any-tool"):
        m = by_id[name].result.message
        block = m.content[0]
        check(f"{name}: a ToolUseBlock", isinstance(block, anthropic.types.ToolUseBlock), m.content)
        check(f"{name}: stop_reason tool_use", m.stop_reason == "tool_use", m.stop_reason)
        jsonschema.validate(block.input, weather_schema)
        check(f"{name}: input valid against the tool's schema", block.name == "get_weather", block.input)
    m = by_id["structured"].result.message
    jsonschema.validate(json.loads(m.content[0].text), person_schema)
    check("structured output: json.loads and valid against the schema", True, m.content[0].text)
    m = by_id["thinking"].result.message
    check("thinking: a ThinkingBlock first, signed",
          isinstance(m.content[0], anthropic.types.ThinkingBlock) and m.content[0].signature, m.content)
    check("thinking: then text", isinstance(m.content[1], anthropic.types.TextBlock), m.content)
    check("thinking: within max_tokens", 0 < m.usage.output_tokens <= 2048, m.usage)
    e = by_id["extra-key"].result
    check("unknown params key: errored, Extra inputs are not permitted",
          e.type == "errored" and e.error.error.message == "foo_bar: Extra inputs are not permitted", e)

    # ---- tidy up: stop what is still running so the next SDK run is not slowed down ----------
    for x in created:
        try:
            if a.messages.batches.retrieve(x).processing_status == "in_progress":
                a.messages.batches.cancel(x)
        except anthropic.APIError:
            pass


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAIL [{SDK}] {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # an SDK exception where none was expected
        traceback.print_exc()
        print(f"FAIL [{SDK}] unexpected {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    print(f"PASS [{SDK}] {passed} checks passed", flush=True)
