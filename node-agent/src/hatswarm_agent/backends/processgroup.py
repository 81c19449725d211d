"""A generative model served by several child processes (option `processes`): concurrency the
runtimes' bindings do not give.

onnxruntime-genai's and llama.cpp's Python bindings hold the GIL for a whole decode step, so
the sequences of one process take turns however many cores the board has: the runtime alone
with four threads made 0.94-1.05x the tokens/s of one sequence here (bench/gen_bench.py). N
processes run N sequences at once on N cores. Each loads its own copy of the weights, so N
times the model's memory: the default is 1, and an EdgeModel that sets `processes` must count
every copy in its memory request. `max_sequences` and `max_queued` are per process. A request
goes to the process with the fewest requests in flight; the model's load is the sum of theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hatswarm_agent.backends.base import Array, LoadedModel, TensorSpec
from hatswarm_agent.backends.genparams import GenerationParams, Prompt
from hatswarm_agent.backends.isolation import ProcessModel
from hatswarm_agent.backends.options import int_option
from hatswarm_agent.backends.sequences import GenerationLoad
from hatswarm_agent.backends.tokenstream import TokenStream

DEFAULT_PROCESSES = 1


class ProcessGroup(LoadedModel):
    """The same model in several `ProcessModel`s, with the interface of one."""

    max_batch_size = 0

    def __init__(self, members: list[ProcessModel]) -> None:
        if not members:
            raise ValueError("a process group needs at least one process")
        self._members = members
        first = members[0]
        self.capabilities: frozenset[str] = first.capabilities
        self.context_length: int = first.context_length
        self.inputs: list[TensorSpec] = first.inputs
        self.outputs: list[TensorSpec] = first.outputs

    @property
    def pids(self) -> list[int | None]:
        return [m.pid for m in self._members]

    @property
    def in_flight(self) -> list[int]:
        """Requests in flight in each process."""
        return [m.in_flight for m in self._members]

    def _least_busy(self) -> ProcessModel:
        return min(self._members, key=lambda m: m.in_flight)

    async def generate(self, prompt: Prompt, params: GenerationParams) -> TokenStream:
        return await self._least_busy().generate(prompt, params)

    def count_tokens(self, prompt: Prompt) -> int:
        return self._least_busy().count_tokens(prompt)

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return self._least_busy().run(inputs)

    def load(self) -> GenerationLoad:
        loads = [m.load() for m in self._members]
        return GenerationLoad(
            **{
                f.name: sum(getattr(load, f.name) for load in loads)
                for f in dataclasses.fields(GenerationLoad)
            }
        )

    def capacity_fps(self) -> float:
        return 0.0

    def close(self) -> None:
        for member in self._members:
            member.close()


def isolated(
    module: str, factory: str, path: Path, options: Mapping[str, str]
) -> ProcessModel | ProcessGroup:
    """The model in one child process, or in `processes` of them (loaded side by side)."""
    processes = int_option(options, "processes", DEFAULT_PROCESSES, minimum=1)
    if processes == 1:
        return ProcessModel(module, factory, path, options)
    with ThreadPoolExecutor(processes, thread_name_prefix="genai-load") as pool:
        futures = [
            pool.submit(ProcessModel, module, factory, path, options) for _ in range(processes)
        ]
    members: list[ProcessModel] = []
    error: BaseException | None = None
    for future in futures:
        try:
            members.append(future.result())
        except BaseException as exc:
            error = error or exc
    if error is not None:
        for member in members:
            member.close()
        raise error
    return ProcessGroup(members)
