"""A webhook receiver process: verifies every request with the official Python SDK's
`client.beta.webhooks.unwrap(payload, headers=..., key=...)` AND with the `standardwebhooks`
library, checks that both refuse the same request with its body altered, and appends one
JSON line per request to a log file. Answers the scripted statuses first (429 with
`retry-after: 1`), then 200; a request that fails verification is answered 400 and logged.

    python receiver.py PORT SECRET LOG_FILE [STATUS,STATUS,...]
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import standardwebhooks

PORT, SECRET, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
SCRIPT = [int(s) for s in sys.argv[4].split(",") if s] if len(sys.argv) > 4 else []
CLIENT = anthropic.Anthropic(api_key="unused")
LOCK = threading.Lock()


def refuses(verify):
    try:
        verify()
    except Exception:
        return True
    return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        payload = self.rfile.read(int(self.headers["content-length"])).decode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"webhook_id": headers.get("webhook-id"), "payload": payload}
        try:
            event = CLIENT.beta.webhooks.unwrap(payload, headers=headers, key=SECRET)
            standardwebhooks.Webhook(SECRET).verify(payload, headers)
            tampered = payload.replace('"event"', '"evenT"')
            assert refuses(lambda: CLIENT.beta.webhooks.unwrap(tampered, headers=headers, key=SECRET))
            assert refuses(lambda: standardwebhooks.Webhook(SECRET).verify(tampered, headers))
            record.update(verified=True, event_id=event.id, type=event.type,
                          created_at=event.created_at.isoformat(), data_type=event.data.type,
                          batch_id=event.data.id, workspace_id=event.data.workspace_id)
        except Exception as e:  # recorded, answered 400: the scenario fails on it
            record.update(verified=False, error=repr(e))
        with LOCK:
            status = (SCRIPT.pop(0) if SCRIPT else 200) if record["verified"] else 400
            record["answered"] = status
            with open(LOG, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(status)
        if status == 429:
            self.send_header("retry-after", "1")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
