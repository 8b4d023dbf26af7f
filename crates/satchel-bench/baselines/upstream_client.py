#!/usr/bin/env python3
"""What a user writes instead of a batch server: asyncio, a semaphore, one POST per request.

Reads requests as JSONL ({"custom_id": ..., "params": {...}} a line), posts each `params` to
an Anthropic-style `POST /v1/messages` with at most --concurrency in flight, and appends one
result line per request to --out, shaped like a batch result line:
{"custom_id": ..., "result": {"type": "succeeded", "message": {...}}} (or "errored").
The client is aiohttp (the fast choice) or httpx (what the official Python SDK uses).

Only the sending and writing are timed (the requests are loaded and encoded first). The last
line printed is JSON: {"client", "requests", "errors", "seconds", "requests_per_second"}.
"""

import argparse
import asyncio
import json
import sys
import time

HEADERS = {
    "content-type": "application/json",
    "x-api-key": "satchel-bench",
    "anthropic-version": "2023-06-01",
}


def load(path, limit):
    items = []
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            items.append((item["custom_id"], json.dumps(item["params"]).encode()))
            if limit and len(items) >= limit:
                break
    return items


def result_line(custom_id, status, payload):
    if status == 200:
        result = {"type": "succeeded", "message": payload}
    else:
        result = {"type": "errored", "error": {"type": "error", "error": payload}}
    return json.dumps({"custom_id": custom_id, "result": result}) + "\n"


async def run_aiohttp(url, items, concurrency, out):
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(custom_id, body):
            nonlocal errors
            async with semaphore:
                async with session.post(url, data=body, headers=HEADERS) as response:
                    payload = await response.json(content_type=None)
                    status = response.status
            if status != 200:
                errors += 1
            out.write(result_line(custom_id, status, payload))

        await asyncio.gather(*(one(c, b) for c, b in items))
    return errors


async def run_httpx(url, items, concurrency, out):
    import httpx

    semaphore = asyncio.Semaphore(concurrency)
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def one(custom_id, body):
            nonlocal errors
            async with semaphore:
                response = await client.post(url, content=body, headers=HEADERS)
                payload = response.json()
            if response.status_code != 200:
                errors += 1
            out.write(result_line(custom_id, response.status_code, payload))

        await asyncio.gather(*(one(c, b) for c, b in items))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["aiohttp", "httpx"], required=True)
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:9000/v1/messages")
    parser.add_argument("--requests-file", required=True, help="JSONL of custom_id + params")
    parser.add_argument("--limit", type=int, default=0, help="send only the first N requests")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--out", required=True, help="JSONL file the results are appended to")
    args = parser.parse_args()

    items = load(args.requests_file, args.limit)
    run = run_aiohttp if args.client == "aiohttp" else run_httpx
    with open(args.out, "a", encoding="utf-8") as out:
        started = time.perf_counter()
        errors = asyncio.run(run(args.url, items, args.concurrency, out))
        out.flush()
        seconds = time.perf_counter() - started
    report = {
        "client": args.client,
        "requests": len(items),
        "errors": errors,
        "seconds": seconds,
        "requests_per_second": len(items) / seconds if seconds > 0 else 0.0,
    }
    print(json.dumps(report))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
