"""MLServer peer for the node-agent benchmark: an onnxruntime session as an MLServer runtime.

Runs in its own venv (bench/out/venvs/mlserver). The benchmark writes a repository under
bench/out/: one model-settings.json per model (inputs and outputs read from the model, since
MLServer's metadata is empty otherwise; ``parameters.uri`` the model file) and a
``settings.json`` with free ports and the form under test (default, or tuned:
``parallel_workers=0``, ``debug=false``); this module is on PYTHONPATH.

It is written the way MLServer's own runtimes are (mlserver-sklearn, mlserver-xgboost): decode
with the numpy codec, run the model inside ``predict``, encode the outputs.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    """One onnxruntime session (onnxruntime's default threads) per model."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(None, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )
