"""Cross-request micro-batching for the HTTP server.

Requests put their texts on one queue; a single worker takes what has arrived — waiting at most
``window_ms`` after the first request for more, up to ``max_batch_size`` texts — and predicts it as one
batch in a worker thread, then hands each request its own rows. Under load the queue fills while a
batch is being computed, so batches grow with the number of concurrent callers; a lone request waits
at most the window. With batching off, every request is predicted on its own, one after another.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Batches ``predict_proba`` calls from concurrent requests; ``await submit(texts)`` → probabilities."""

    def __init__(self, predict_proba: Callable[[Sequence[str]], np.ndarray], max_batch_size: int = 32,
                 window_ms: float = 5.0, enabled: bool = True) -> None:
        if max_batch_size < 1 or window_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and window_ms >= 0")
        self.predict_proba = predict_proba
        self.max_batch_size = max_batch_size if enabled else 1
        self.window = window_ms / 1000 if enabled else 0.0
        self.enabled = enabled
        self.stats = {"batches": 0, "texts": 0, "largest_batch": 0}
        self._queue: asyncio.Queue[_Pending] | None = None
        self._carried: _Pending | None = None
        self._worker: asyncio.Task | None = None
        # One thread: the model computes one batch at a time (torch parallelises inside the batch).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textxfer-predict")

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish everything already queued, then stop the worker."""
        if self._queue is not None and self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities for ``texts`` (rows in input order), predicted together with other requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def _collect(self) -> list[_Pending]:
        """The next batch: the first waiting request plus whatever arrives within the window."""
        queue = self._queue
        if self._carried is not None:  # the request that did not fit into the previous batch
            batch, self._carried = [self._carried], None
        else:
            batch = [await queue.get()]
        size = len(batch[0].texts)  # one request larger than the batch size is still predicted whole
        deadline = time.perf_counter() + self.window
        while size < self.max_batch_size:
            if not queue.empty():
                item = queue.get_nowait()
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if size + len(item.texts) > self.max_batch_size:
                self._carried = item  # starts the next batch; never split a request
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            texts = [text for item in batch for text in item.texts]
            try:
                probabilities = await loop.run_in_executor(self._executor, self.predict_proba, texts)
            except Exception as exc:  # every waiting request gets the error (the server answers 500)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            else:
                start = 0
                for item in batch:
                    rows = probabilities[start:start + len(item.texts)]
                    start += len(item.texts)
                    if not item.future.done():  # a caller may have gone away
                        item.future.set_result(rows)
                self.stats["batches"] += 1
                self.stats["texts"] += len(texts)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
            finally:
                for _ in batch:
                    self._queue.task_done()
