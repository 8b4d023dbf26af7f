#!/usr/bin/env python3
"""Real-model scenario: batches through Satchel on llama.cpp's server, with the official Python SDK.

    SATCHEL_BASE_URL=… LLAMA_BASE_URL=… LLAMA_CTX=2048 python scenario.py

Run by run.sh, which starts both servers. Every request goes once through each upstream format
(model `smollm2-anthropic`: llama.cpp's /v1/messages; `smollm2-openai`: its
/v1/chat/completions through Satchel's translation). Every result line is validated strictly
against the SDK's models, both as the SDK reads them and as raw JSON. Prints one line per check;
exits 1 on the first failure.
"""

import json
import os
import random
import sys
import time
import traceback
import urllib.request

import anthropic
from anthropic.types.messages import MessageBatchIndividualResponse

BASE_URL = os.environ["SATCHEL_BASE_URL"].rstrip("/")
LLAMA_URL = os.environ["LLAMA_BASE_URL"].rstrip("/")
LLAMA_CTX = int(os.environ.get("LLAMA_CTX", "2048"))
KEY = "sk-real-model"
MODELS = ("smollm2-anthropic", "smollm2-openai")
# A batch here takes under a minute on 2 idle cores, ten under heavy load; the bound only stops a hang.
BATCH_TIMEOUT = 1800.0
# 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

client = anthropic.Anthropic(api_key=KEY, base_url=BASE_URL, _strict_response_validation=True, max_retries=2)
passed = 0


class CheckFailed(Exception):
    pass


def check(name, cond, detail=""):
    global passed
    if not cond:
        raise CheckFailed(f"{name}: {detail}" if detail != "" else name)
    passed += 1
    print(f"  ok  {name}", flush=True)


def section(title):
    print(f"--- {title}", flush=True)


def params(model, text, max_tokens=16, **extra):
    p = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    p.update(extra)
    return p


def token_count(text):
    """Tokens of `text` by the model's own tokenizer (llama.cpp's /tokenize)."""
    req = urllib.request.Request(LLAMA_URL + "/tokenize", data=json.dumps({"content": text}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return len(json.load(r)["tokens"])


def words_of_tokens(n):
    """A prompt of about `n` tokens (measured, not guessed)."""
    rng = random.Random(n)
    vocab = ["river", "stone", "garden", "window", "candle", "mountain", "letter", "harbor", "forest", "cloud"]
    words = [rng.choice(vocab) for _ in range(n)]
    while token_count(" ".join(words)) > n:
        words = words[: int(len(words) * 0.95)]
    return " ".join(words)


def run_batch(requests, label, headers=None):
    """Creates a batch, waits for it to end, returns (batch, {custom_id: result}) strictly validated."""
    batch = client.messages.batches.create(requests=requests, extra_headers=headers)
    deadline = time.monotonic() + BATCH_TIMEOUT
    while batch.processing_status != "ended":
        if time.monotonic() > deadline:
            raise CheckFailed(f"{label}: batch {batch.id} did not end within {BATCH_TIMEOUT:.0f}s: {batch.request_counts}")
        time.sleep(0.5)
        batch = client.messages.batches.retrieve(batch.id)
    return batch, results_of(batch, label, len(requests))


def results_of(batch, label, n):
    sdk = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    raw = raw_results(batch.id)
    check(f"{label}: {n} result lines, one per request", len(sdk) == n and len(raw) == n, (len(sdk), len(raw)))
    for obj in raw:
        try:
            MessageBatchIndividualResponse.model_validate(obj)  # strict pydantic validation
        except Exception as e:
            raise CheckFailed(f"{label}: {obj.get('custom_id')} fails strict validation: {e}\n{json.dumps(obj)[:2000]}")
    check(f"{label}: every line validates strictly against the SDK's models", True)
    counts = batch.request_counts
    by_type = {}
    for r in sdk.values():
        by_type[r.type] = by_type.get(r.type, 0) + 1
    check(f"{label}: counts match the lines", by_type == {k: v for k, v in counts.to_dict().items() if v},
          (by_type, counts))
    return sdk


def raw_results(batch_id):
    req = urllib.request.Request(f"{BASE_URL}/v1/messages/batches/{batch_id}/results",
                                 headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def succeeded(results, cid, label=None):
    r = results[cid]
    label = label or cid
    detail = r.error.to_dict() if r.type == "errored" else r.type
    check(f"{label}: succeeded", r.type == "succeeded", detail)
    m = r.message
    check(f"{label}: usage sane (input {m.usage.input_tokens}, output {m.usage.output_tokens})",
          m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage.to_dict())
    return m


def errored(results, cid, kinds, must_say):
    r = results[cid]
    check(f"{cid}: errored", r.type == "errored", r.type)
    e = r.error.error
    check(f"{cid}: {e.type} saying {must_say!r}", e.type in kinds and must_say in e.message.lower(), e.to_dict())
    return e


def main():
    section("features, through both formats")
    prompt_budget = LLAMA_CTX - 150  # room for the chat template and max_tokens
    long_text = words_of_tokens(prompt_budget)
    long_tokens = token_count(long_text)
    over_text = words_of_tokens(LLAMA_CTX + 400)
    tool = {"name": "get_weather", "description": "Get the current weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    requests = []
    for model in MODELS:
        tag = model.split("-")[1]
        requests += [
            {"custom_id": f"plain-{tag}", "params": params(model, "Say hello in one short sentence.")},
            {"custom_id": f"system-{tag}", "params": params(model, "Who are you?",
                                                            system="You are a pirate. Answer in one sentence.")},
            {"custom_id": f"system-blocks-{tag}", "params": params(
                model, "Greet me.", system=[{"type": "text", "text": "You are terse."}])},
            {"custom_id": f"multi-{tag}", "params": {"model": model, "max_tokens": 16, "messages": [
                {"role": "user", "content": "My name is Ada."},
                {"role": "assistant", "content": "Nice to meet you, Ada."},
                {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]}},
            {"custom_id": f"stop-{tag}", "params": params(
                model, "Count from 1 to 20, separated by commas.", max_tokens=48, stop_sequences=["7"])},
            {"custom_id": f"temp0-{tag}", "params": params(model, "Name three colors.", max_tokens=24, temperature=0)},
            {"custom_id": f"long-{tag}", "params": params(model, long_text, max_tokens=8)},
            {"custom_id": f"over-{tag}", "params": params(model, over_text, max_tokens=8)},
            {"custom_id": f"tools-{tag}", "params": params(model, "What is the weather in Paris?", max_tokens=32,
                                                           tools=[tool], tool_choice={"type": "auto"})},
            {"custom_id": f"image-{tag}", "params": params(model, [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "What is in this image?"}])},
        ]
    t0 = time.monotonic()
    batch, results = run_batch(requests, "features")
    print(f"      ({len(requests)} requests in {time.monotonic() - t0:.1f}s)")
    for model in MODELS:
        tag = model.split("-")[1]
        for cid in ("plain", "system", "system-blocks", "multi"):
            m = succeeded(results, f"{cid}-{tag}")
            check(f"{cid}-{tag}: some text", len(text_of(m)) > 0 and m.stop_reason in ("end_turn", "max_tokens"),
                  m.to_dict())
        m = succeeded(results, f"stop-{tag}")
        check(f"stop-{tag}: the stop sequence is not in the text", "7" not in text_of(m), text_of(m))
        if m.stop_sequence is not None:
            check(f"stop-{tag}: stop_sequence is the one asked for", m.stop_sequence == "7", m.stop_sequence)
        m = succeeded(results, f"long-{tag}")
        seen = m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)
        check(f"long-{tag}: a {long_tokens}-token prompt in a {LLAMA_CTX}-token context is read whole ({seen})",
              long_tokens <= seen < LLAMA_CTX, m.usage.to_dict())
        errored(results, f"over-{tag}", ("invalid_request_error",), "context")
        m = succeeded(results, f"tools-{tag}")
        check(f"tools-{tag}: the answer is text or a get_weather call",
              all(b.type == "text" or (b.type == "tool_use" and b.name == "get_weather") for b in m.content),
              m.to_dict())
        errored(results, f"image-{tag}", ("invalid_request_error", "api_error"), "image")
    first = {tag: text_of(results[f"temp0-{tag}"].message) for tag in ("anthropic", "openai")}

    section("temperature 0: same params, same text, in another batch (created with anthropic-beta)")
    again = [r for r in requests if r["custom_id"].startswith("temp0-")]
    # Forwarded to the anthropic backend with each request; llama.cpp ignores it.
    _, results = run_batch(again, "temperature 0", {"anthropic-beta": "token-efficient-tools-2025-02-19"})
    for tag in ("anthropic", "openai"):
        m = succeeded(results, f"temp0-{tag}")
        check(f"temp0-{tag}: the same text as in the first batch", text_of(m) == first[tag], (text_of(m), first[tag]))

    section("cancel mid-batch")
    n = 120
    requests = [{"custom_id": f"c{i}", "params": params(MODELS[i % 2], f"Write a short poem about the number {i}.",
                                                        max_tokens=48)} for i in range(n)]
    batch = client.messages.batches.create(requests=requests)
    deadline = time.monotonic() + BATCH_TIMEOUT
    while batch.request_counts.succeeded < 4:
        if time.monotonic() > deadline or batch.processing_status == "ended":
            raise CheckFailed(f"cancel: the batch did not get going: {batch}")
        time.sleep(0.2)
        batch = client.messages.batches.retrieve(batch.id)
    batch = client.messages.batches.cancel(batch.id)
    check("cancel: the batch is canceling (or already ended)", batch.processing_status in ("canceling", "ended"),
          batch.processing_status)
    while batch.processing_status != "ended":
        if time.monotonic() > deadline:
            raise CheckFailed(f"cancel: the batch did not end: {batch.request_counts}")
        time.sleep(0.5)
        batch = client.messages.batches.retrieve(batch.id)
    results = results_of(batch, "cancel", n)
    c = batch.request_counts
    check(f"cancel: some succeeded ({c.succeeded}), the rest canceled ({c.canceled}), none errored",
          c.succeeded >= 4 and c.canceled >= n // 2 and c.errored == 0 and c.succeeded + c.canceled == n, c)
    for cid, r in results.items():
        u = r.message.usage if r.type == "succeeded" else None
        if u is not None and not (u.input_tokens > 0 and u.output_tokens > 0):
            raise CheckFailed(f"cancel: {cid}: usage {u.to_dict()}")
    check("cancel: usage sane on every succeeded line", True)

    section("a batch of a few hundred requests")
    n = 300
    topics = ["cats", "rain", "bread", "trains", "music", "the sea", "snow", "books", "tea", "stars"]
    requests = [{"custom_id": f"r{i}", "params": params(
        MODELS[i % 2], f"In a few words: something about {topics[i % len(topics)]} (#{i}).", max_tokens=8)}
        for i in range(n)]
    t0 = time.monotonic()
    batch, results = run_batch(requests, f"{n} requests")
    elapsed = time.monotonic() - t0
    check(f"{n} requests: all succeeded", batch.request_counts.succeeded == n, batch.request_counts)
    out = 0
    for cid, r in results.items():
        u = r.message.usage
        if not (u.input_tokens > 0 and u.output_tokens > 0):
            raise CheckFailed(f"{cid}: usage {u.to_dict()}")
        out += u.output_tokens
    check(f"{n} requests: usage sane on every line ({out} output tokens, {out / elapsed:.0f} tokens/s, "
          f"{elapsed:.1f}s)", True)


if __name__ == "__main__":
    print(f"real-model scenario: anthropic=={anthropic.__version__} against {BASE_URL} (llama.cpp at {LLAMA_URL})")
    try:
        main()
    except CheckFailed as e:
        print(f"FAIL {e}", flush=True)
        print(f"{passed} checks passed before the failure")
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print(f"FAIL unexpected exception after {passed} checks")
        sys.exit(1)
    print(f"PASS {passed} checks")
