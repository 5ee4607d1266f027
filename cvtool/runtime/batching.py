"""The overlapped pipeline: decode in worker threads, batch, run, keep input order.

``ordered_map`` runs zero-argument jobs on a thread pool while a producer thread keeps at most
``depth`` of them in flight (so memory stays bounded on a million-file folder or an hour of
video) and yields their results in submission order. ``windows`` then groups results into
batches for the model without reordering: failures travel inside the window they arrived in.
Decoding (Pillow) and resizing (OpenCV) release the GIL, so threads really overlap with the
runner.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def ordered_map(jobs: Iterable[Callable[[], T]], workers: int = 2, depth: int = 16
                ) -> Iterator[T]:
    """Run ``jobs`` concurrently and yield their results in order.

    Iterating ``jobs`` itself happens on a producer thread (a video source decodes frames
    there). An exception raised by a job or by the producer is re-raised to the consumer.
    """
    workers = max(1, int(workers))
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvtool-decode")

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for job in jobs:
                if not put(pool.submit(job)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            failed: Future = Future()
            failed.set_exception(e)
            put(failed)
        put(_DONE)

    producer = threading.Thread(target=produce, name="cvtool-sources", daemon=True)
    producer.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            yield item.result()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


def windows(items: Iterable[T], batch: int, is_ready: Callable[[T], bool]) -> Iterator[list[T]]:
    """Group ``items`` into windows holding ``batch`` ready items (plus any failures between
    them), preserving order. The last window may hold fewer, and so may a window cut short
    because failures piled up in it (so a stream of bad inputs is reported as it goes)."""
    batch = max(1, int(batch))
    cap = max(4 * batch, 32)
    window: list[T] = []
    ready = 0
    for item in items:
        window.append(item)
        if is_ready(item):
            ready += 1
        if ready == batch or len(window) >= cap:
            yield window
            window, ready = [], 0
    if window:
        yield window
