"""The encoder features of one video, shared between its expressions, held in tiers
(:mod:`.aot_backend`, "Shared encoder").

Each (frame, view) is encoded once per video; its features (``encode_image``'s list of
tensors) go to the first tier with room and stay there until the next video:

1. **device**: where the network runs; used as they are.
2. **host** (only when the device is CUDA; on the CPU the device IS host memory):
   page-locked (pinned) host memory, copied back to the device at each use. Copies are
   exact in both directions, so the masks do not change.
3. **recompute**: not held; the encoder runs again when another expression needs them.

Budgets are measured, never found by running out of memory:

* device, CUDA: a (frame, view) is held on the device only while, after it, the device
  still has ``reserve`` bytes free (``torch.cuda.mem_get_info``'s free memory plus what
  PyTorch's allocator holds unused). ``reserve`` is the largest of 2 GiB, 5 % of the
  device's memory and 1.5 x the largest working set of one expression seen so far (its
  peak allocation past the features and the network; measured per expression);
* device, CPU, and host: what ``MemAvailable`` (``/proc/meminfo``) gives at the start of
  the video, less 2 GiB or 20 % of the RAM, whichever is larger;
* ``device_mb`` / ``host_mb`` (``--encoder-cache-mb`` / ``--host-cache-mb``), when given,
  cap these further (0: that tier holds nothing). Pinning that fails (the OS refuses
  page-locked memory) closes the host tier for the rest of the video.

Counters (``stats()``): ``encoder_calls`` (encoder runs), ``device_hits``, ``host_hits``
(features reused from each tier) and ``recomputes`` (encoder runs for a (frame, view)
encoded before in the same video but not held).
"""

from __future__ import annotations

import os

GIB = 2**30
MIB = 2**20
RAM_MARGIN, RAM_MARGIN_FRACTION = 2 * GIB, 0.20
DEVICE_RESERVE, DEVICE_RESERVE_FRACTION, WORKING_SET_FACTOR = 2 * GIB, 0.05, 1.5


def ram() -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) in bytes, or None where ``/proc/meminfo`` is missing."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        return int(info["MemAvailable"].split()[0]) * 1024, int(info["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
        except (OSError, ValueError, AttributeError):
            return None


def ram_budget(cap: int | None, held: int = 0) -> int:
    """Bytes of host memory a tier may fill: available RAM (plus ``held``, what this cache
    had just released and may reuse) less the margin, at most ``cap``."""
    mem = ram()
    measured = 0 if mem is None else mem[0] + held - max(RAM_MARGIN, RAM_MARGIN_FRACTION * mem[1])
    measured = max(0, int(measured))
    return measured if cap is None else min(cap, measured)


def nbytes(embs) -> int:
    return sum(x.numel() * x.element_size() for x in embs)


class FeatureCache:
    """The (frame, view) -> features tiers of one video (module docstring).

    ``device``: the network's ``torch.device``. ``device_mb`` / ``host_mb``: caps in MiB
    (None: the measured budget only). ``share=False``: nothing is held (every use encodes).
    ``host_tier``: None = only on CUDA; True puts the host tier's code path to work on the
    CPU too (tests: there it holds plain copies)."""

    def __init__(self, device, device_mb=None, host_mb=None, share=True, host_tier=None):
        self.device = device
        self.cuda = device.type == "cuda"
        self.device_cap = None if device_mb is None else int(device_mb * MIB)
        self.host_cap = None if host_mb is None else int(host_mb * MIB)
        self.share = bool(share)
        self.host_tier = self.cuda if host_tier is None else bool(host_tier)
        self.encoder_calls = self.device_hits = self.host_hits = self.recomputes = 0
        self.working_set = 0  # largest per-expression working set seen (CUDA)
        self.video = None
        self._entries: dict = {}  # key -> (tier, features)
        self._seen: set = set()
        self.device_used = self.host_used = 0
        self.device_budget = self.host_budget = 0
        self._mark = (0, 0)

    # ---------------------------------------------------------------- per video
    def start_video(self, video) -> None:
        """Drop the features of the last video (if ``video`` is another) and measure the
        budgets for this one."""
        if video is self.video:
            return
        held_host = self.host_used
        held_device = 0 if self.cuda else self.device_used
        self._entries, self._seen, self.video = {}, set(), video
        self.device_used = self.host_used = 0
        if not self.share:
            self.device_budget = self.host_budget = 0
            return
        if self.cuda:  # measured at each put (device_room)
            self.device_budget = self.device_cap
        else:
            self.device_budget = ram_budget(self.device_cap, held_device)
        self.host_budget = ram_budget(self.host_cap, held_host) if self.host_tier else 0

    def has(self, key) -> bool:
        return key in self._entries

    def features(self, key, encode):
        """The features of ``key`` = (frame, view): from a tier, or ``encode()`` (held in
        the first tier with room)."""
        hit = self._entries.get(key)
        if hit is not None:
            tier, embs = hit
            if tier == "device":
                self.device_hits += 1
                return embs
            self.host_hits += 1
            return [x.to(self.device, non_blocking=True) for x in embs]
        embs = encode()
        self.encoder_calls += 1
        if not self.share:
            return embs
        if key in self._seen:
            self.recomputes += 1
            return embs
        self._seen.add(key)
        self._put(key, embs)
        return embs

    def _put(self, key, embs) -> None:
        size = nbytes(embs)
        cap = self.device_budget
        if (cap is None or self.device_used + size <= cap) and self.device_room(size):
            self._entries[key] = ("device", embs)
            self.device_used += size
        elif self.host_tier and self.host_used + size <= self.host_budget:
            try:
                copies = [self._host_copy(x) for x in embs]
            except RuntimeError:  # page-locked memory refused: no host tier for this video
                self.host_budget = 0
                return
            self._entries[key] = ("host", copies)
            self.host_used += size

    def _host_copy(self, x):
        import torch

        if not self.cuda:  # the CPU: a plain copy (the code path, for tests)
            return x.clone()
        out = torch.empty(x.shape, dtype=x.dtype, layout=x.layout, pin_memory=True)
        out.copy_(x)
        return out

    # ----------------------------------------------------- device memory (CUDA)
    def device_free(self) -> int:
        """Bytes the device can still give: free memory plus what PyTorch's allocator
        holds unused."""
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)
        return (
            free
            + torch.cuda.memory_reserved(self.device)
            - torch.cuda.memory_allocated(self.device)
        )

    def reserve(self) -> int:
        import torch

        total = torch.cuda.get_device_properties(self.device).total_memory
        return int(max(DEVICE_RESERVE, DEVICE_RESERVE_FRACTION * total,
                       WORKING_SET_FACTOR * self.working_set))  # fmt: skip

    def device_room(self, size: int) -> bool:
        """Whether ``size`` more bytes on the device still leave the reserve free (always
        on the CPU: its budget is the RAM's, measured per video)."""
        if not self.cuda:
            return True
        return self.device_free() - size >= self.reserve()

    def expression_started(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self._mark = (torch.cuda.memory_allocated(self.device), self.device_used)

    def expression_done(self) -> None:
        """Record the expression's working set: its peak allocation less what it started
        with and what the features it added hold."""
        if self.cuda:
            import torch

            start, held = self._mark
            peak = torch.cuda.max_memory_allocated(self.device)
            ws = peak - start - (self.device_used - held)
            self.working_set = max(self.working_set, int(ws))

    # ------------------------------------------------------------------ report
    def stats(self) -> dict:
        return {
            "encoder_calls": self.encoder_calls,
            "device_hits": self.device_hits,
            "host_hits": self.host_hits,
            "recomputes": self.recomputes,
        }

    def describe(self) -> str:
        s = self.stats()
        return (
            f"encoder: {s['encoder_calls']} calls, {s['device_hits']} device hits, "
            f"{s['host_hits']} host hits, {s['recomputes']} recomputes"
        )
