"""tritonclient's system shared memory, unmodified, in a child process (see tritonjobs.py).

Each function runs in a spawned interpreter through `tritonjobs.run`; they return plain data
(arrays, strings) so the test process never imports tritonclient.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np


def _client(url: str, token: str) -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url), (
        {"authorization": f"Bearer {token}"} if token else None
    )


def infer_mlp(url: str, x: np.ndarray, token: str = "", rounds: int = 3) -> dict[str, Any]:
    """The test MLP (x [N, 64] -> y [N, 10]) with its input and output in shared memory, as
    tritonclient's own example does; `rounds` requests, a new input written each time."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    client, headers = _client(url, token)
    tag = f"t{os.getpid()}"
    out_bytes = x.shape[0] * 10 * 4
    ins = shm.create_shared_memory_region(f"{tag}-in", f"/{tag}-in", x.nbytes)
    outs = shm.create_shared_memory_region(f"{tag}-out", f"/{tag}-out", out_bytes)
    results: dict[str, Any] = {"outputs": [], "raw_lengths": []}
    try:
        client.register_system_shared_memory(f"{tag}-in", f"/{tag}-in", x.nbytes, headers=headers)
        client.register_system_shared_memory(
            f"{tag}-out", f"/{tag}-out", out_bytes, headers=headers
        )
        status = client.get_system_shared_memory_status(headers=headers, as_json=True)
        results["status"] = sorted(status.get("regions", {}))
        for i in range(rounds):
            shm.set_shared_memory_region(ins, [x + i])
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_shared_memory(f"{tag}-in", x.nbytes)
            wanted = grpcclient.InferRequestedOutput("y")
            wanted.set_shared_memory(f"{tag}-out", out_bytes)
            result = client.infer("mlp", [tensor], outputs=[wanted], headers=headers)
            output = result.get_output("y")
            y = shm.get_contents_as_numpy(outs, np.float32, list(output.shape))
            results["outputs"].append(np.array(y))
            results["raw_lengths"].append(
                [len(r) for r in result.get_response().raw_output_contents]
            )
        client.unregister_system_shared_memory(headers=headers)
        after = client.get_system_shared_memory_status(headers=headers, as_json=True)
        results["after_unregister"] = sorted(after.get("regions", {}))
    finally:
        for handle in (ins, outs):
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(handle)
        client.close()
    return results


def register_then_use(
    url: str, key: str, size: int, register_token: str, use_token: str, rotate: str = ""
) -> dict[str, str]:
    """Register a region with one token, then (after writing `rotate` into the token file
    named by `rotate`'s path part, when given) try to see and use it with another."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm
    from tritonclient.utils import InferenceServerException

    out: dict[str, str] = {}
    client = grpcclient.InferenceServerClient(url)
    handle = shm.create_shared_memory_region("region", key, size)
    try:
        client.register_system_shared_memory(
            "region", key, size, headers={"authorization": f"Bearer {register_token}"}
        )
        out["registered"] = "ok"
        if rotate:
            path, _, token = rotate.partition("=")
            with open(path, "w") as f:
                f.write(token)
        other = {"authorization": f"Bearer {use_token}"}
        status = client.get_system_shared_memory_status(headers=other, as_json=True)
        out["status_other"] = ",".join(sorted(status.get("regions", {})))
        tensor = grpcclient.InferInput("x", [1, 64], "FP32")
        tensor.set_shared_memory("region", 256)
        try:
            client.infer("mlp", [tensor], headers=other)
            out["infer_other"] = "ok"
        except InferenceServerException as exc:
            out["infer_other"] = f"{exc.status()}: {exc.message()}"
    except InferenceServerException as exc:
        out["error"] = f"{exc.status()}: {exc.message()}"
    finally:
        with contextlib.suppress(Exception):
            shm.destroy_shared_memory_region(handle)
        client.close()
    return out


def try_register(url: str, key: str, size: int) -> str:
    """Register one region; 'ok' or the error's status and message."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    handle = shm.create_shared_memory_region("region", key, size)
    try:
        client.register_system_shared_memory("region", key, size)
        client.unregister_system_shared_memory("region")
        return "ok"
    except InferenceServerException as exc:
        return f"{exc.status()}: {exc.message()}"
    finally:
        with contextlib.suppress(Exception):
            shm.destroy_shared_memory_region(handle)
        client.close()
