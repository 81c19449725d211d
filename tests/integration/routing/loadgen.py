"""A tritonclient load generator run as a child process (tritonclient's OIP protobufs clash with
hatswarm's own in one process).

    python loadgen.py URL MODEL TOTAL THREADS

Sends TOTAL requests over THREADS clients (one InferenceServerClient each), prints
`progress N` every 100 answers, then one JSON line: ok, failed, errors (first few), nodes
(answers per hatswarm.node) and latencies_ms (sorted).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> int:
    url, model, total, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "failed": 0}
    errors: list[str] = []
    nodes: Counter[str] = Counter()
    latencies: list[float] = []
    data = np.ones((1, 4), dtype=np.float32)

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(data)
        while True:
            with lock:
                if state["next"] >= total:
                    break
                state["next"] += 1
            start = time.perf_counter()
            try:
                result = client.infer(model, [inp], client_timeout=10.0)
                params = result.get_response().parameters
                node = params["hatswarm.node"].string_param if "hatswarm.node" in params else ""
                ok = True
            except Exception as exc:
                ok, node = False, ""
                err = f"{type(exc).__name__}: {exc}"
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                if ok:
                    state["ok"] += 1
                    nodes[node] += 1
                    latencies.append(elapsed)
                else:
                    state["failed"] += 1
                    if len(errors) < 5:
                        errors.append(err)
                done = state["ok"] + state["failed"]
                if done % 100 == 0:
                    print(f"progress {done}", flush=True)
        client.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    summary = {
        "ok": state["ok"],
        "failed": state["failed"],
        "errors": errors,
        "nodes": dict(nodes),
        "latencies_ms": sorted(latencies),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
