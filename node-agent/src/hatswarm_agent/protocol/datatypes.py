"""Open Inference Protocol datatypes and their numpy and protobuf-field counterparts.

Only numpy here, no generated stubs: the operator (validation gate, load tests) shares these
tables without importing the agent's OIP protobufs, which clash with tritonclient's in one
process.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

# OIP datatype -> numpy dtype on the wire. BF16 has no numpy dtype: it travels raw as its
# uint16 bits (a client holds it as float32).
OIP_TO_NUMPY: MappingProxyType[str, np.dtype[Any]] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BF16": np.dtype(np.uint16),
        "BYTES": np.dtype(np.object_),
    }
)

# Which InferTensorContents field carries each datatype when typed; FP16/BF16 are raw only.
CONTENTS_FIELD: MappingProxyType[str, str] = MappingProxyType(
    {
        "BOOL": "bool_contents",
        "UINT8": "uint_contents",
        "UINT16": "uint_contents",
        "UINT32": "uint_contents",
        "UINT64": "uint64_contents",
        "INT8": "int_contents",
        "INT16": "int_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "FP32": "fp32_contents",
        "FP64": "fp64_contents",
        "BYTES": "bytes_contents",
    }
)
