"""Where cross-window anchor frames wait between the window that records them and the later windows that read
them (attention/window_anchors.py). Two keepers, one interface (save / prefetch / load, by key):

- KeptOnDevice: copies on the model's device. No copies across the bus, but two latent frames' keys and values
  per layer and conditioning stay in GPU memory the whole step (about 1 GiB for Wan 2.1 1.3B at 480x832, cfg).
- KeptOnHost: page-locked (pinned) host buffers, one per key, reused step after step. On a CUDA device every
  copy runs on one side stream per device, so it overlaps the model's own work instead of queueing in it:
  * save: the side stream waits until the model's stream has produced the keys, copies them to the host, and
    the source's memory is kept from reuse until that copy has ended (record_stream);
  * prefetch: the layer before the one that reads a key starts its upload into fresh device memory;
  * load: the model's stream waits for that upload (or uploads now when nothing was prefetched).
  All copies of a key run on the one side stream in the order they were issued, so an upload of the previous
  window's frame ends before the next save overwrites the same buffer. Each save bumps the key's version: a
  prefetch issued before a newer save is stale and is dropped, never read. Nothing on the host reads the
  buffers, so nothing waits for the GPU. Where a conditioning moves to another GPU between windows (MultiGPU),
  events order the two devices' side streams: an upload waits for the save it reads, a save for the last
  upload of the buffer it overwrites. Assumes what Wan's blocks do: keys and values handed to attention are
  not changed in place afterwards.
  On a CPU device the same bookkeeping runs with plain copies (what the CPU tests exercise).
"""
from __future__ import annotations

import threading

import torch

KEEP_CHOICES = ("cpu", "gpu")


def keeper(keep: str):
    return KeptOnHost() if keep == "cpu" else KeptOnDevice()


class KeptOnDevice:
    """Copies where the model computed them (a view would keep the whole window's keys alive)."""

    prefetches = False

    def __init__(self):
        self._kv: dict = {}

    def save(self, key, k: torch.Tensor, v: torch.Tensor) -> None:
        self._kv[key] = (k.clone(), v.clone())

    def prefetch(self, key, device: torch.device) -> None:
        pass

    def load(self, key, like: torch.Tensor):
        return self._kv[key]

    def nbytes(self) -> dict:
        return {"device": sum(_bytes(t) for pair in self._kv.values() for t in pair), "host": 0}

    def clear(self) -> None:
        self._kv.clear()


class _Upload:
    def __init__(self, version: int, k, v, event):
        self.version, self.k, self.v, self.event = version, k, v, event


class KeptOnHost:
    """Pinned host buffers and side-stream copies (see the module docstring)."""

    prefetches = True

    def __init__(self):
        self._host: dict = {}       # key -> (k, v) host buffers
        self._version: dict = {}    # key -> saves so far
        self._uploads: dict = {}    # key -> _Upload started by prefetch
        self._saved: dict = {}      # key -> event: its buffer's last save has finished (CUDA)
        self._read: dict = {}       # key -> event: its buffer's last upload has finished (CUDA)
        self._streams: dict = {}    # device -> side stream
        self._lock = threading.Lock()
        self.prefetch_hits = 0      # loads served by a prefetch (tests and benchmarks read these)
        self.prefetch_misses = 0

    def _stream(self, device: torch.device):
        with self._lock:
            stream = self._streams.get(device)
            if stream is None:
                stream = self._streams[device] = torch.cuda.Stream(device)
            return stream

    def _buffers(self, key, k: torch.Tensor, v: torch.Tensor, pin: bool):
        held = self._host.get(key)
        if held is None or held[0].shape != k.shape or held[0].dtype != k.dtype:
            held = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=pin) for t in (k, v))
            self._host[key] = held
        return held

    def save(self, key, k: torch.Tensor, v: torch.Tensor) -> None:
        cuda = k.is_cuda
        with self._lock:
            host_k, host_v = self._buffers(key, k, v, pin=cuda)
            self._version[key] = self._version.get(key, 0) + 1
            self._uploads.pop(key, None)
        if not cuda:
            host_k.copy_(k)
            host_v.copy_(v)
            return
        side = self._stream(k.device)
        side.wait_stream(torch.cuda.current_stream(k.device))
        with self._lock:
            read = self._read.get(key)
        if read is not None:
            side.wait_event(read)
        with torch.cuda.stream(side):
            host_k.copy_(k, non_blocking=True)
            host_v.copy_(v, non_blocking=True)
            saved = torch.cuda.Event()
            saved.record(side)
        k.record_stream(side)
        v.record_stream(side)
        with self._lock:
            self._saved[key] = saved

    def prefetch(self, key, device: torch.device) -> None:
        with self._lock:
            held, version = self._host.get(key), self._version.get(key)
            started = self._uploads.get(key)
        if version is None or (started is not None and started.version == version):
            return
        upload = self._upload(key, held, version, device)
        with self._lock:
            if self._version.get(key) == version:
                self._uploads[key] = upload

    def _upload(self, key, held, version: int, device: torch.device) -> _Upload:
        host_k, host_v = held
        if device.type != "cuda":
            return _Upload(version, host_k.to(device, copy=True), host_v.to(device, copy=True), None)
        side = self._stream(device)
        with self._lock:
            saved = self._saved.get(key)
        if saved is not None:
            side.wait_event(saved)
        with torch.cuda.stream(side):   # allocated on the side stream: its memory is not reused under it
            k = torch.empty(host_k.shape, dtype=host_k.dtype, device=device)
            v = torch.empty(host_v.shape, dtype=host_v.dtype, device=device)
            k.copy_(host_k, non_blocking=True)
            v.copy_(host_v, non_blocking=True)
            event = torch.cuda.Event()
            event.record(side)
        with self._lock:
            self._read[key] = event
        return _Upload(version, k, v, event)

    def load(self, key, like: torch.Tensor):
        with self._lock:
            upload = self._uploads.pop(key, None)
            held, version = self._host[key], self._version[key]
            hit = upload is not None and upload.version == version and upload.k.device == like.device
            if hit:
                self.prefetch_hits += 1
            else:
                self.prefetch_misses += 1
        if not hit:
            upload = self._upload(key, held, version, like.device)
        if upload.event is not None:
            compute = torch.cuda.current_stream(like.device)
            compute.wait_event(upload.event)
            upload.k.record_stream(compute)
            upload.v.record_stream(compute)
        return upload.k, upload.v

    def nbytes(self) -> dict:
        return {"device": sum(_bytes(t) for u in self._uploads.values() for t in (u.k, u.v)),
                "host": sum(_bytes(t) for pair in self._host.values() for t in pair)}

    def clear(self) -> None:
        """Forget the frames (a new run). Freed pinned buffers go back to torch's host cache, which serves the
        next run's without new page-locking."""
        with self._lock:
            self._host.clear()
            self._version.clear()
            self._uploads.clear()
            self._saved.clear()
            self._read.clear()


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
