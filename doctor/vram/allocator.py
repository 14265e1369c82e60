"""A model of torch's CUDA caching allocator: replay a sequence of device allocations and frees, and read the peak
of allocated and of reserved bytes (torch.cuda.max_memory_allocated / max_memory_reserved).

It follows c10/cuda/CUDACachingAllocator.cpp with its defaults (no expandable segments, no max_split_size, no
roundup_power2_divisions) on one stream: requests round up to 512 B (round_size); up to 1 MiB they take the small
pool, packed in 2 MiB segments, larger ones the large pool, in 20 MiB segments below 10 MiB and segments of their
own size rounded up to 2 MiB from there (get_allocation_size); a request takes the smallest cached block that
holds it, the lowest address among equals (BlockComparatorSize, get_free_block); a block is split when what remains
is at least 512 B (small pool) or more than 1 MiB (large pool) (should_split); a freed block merges with free
neighbours of its segment (free_block). Segments are never returned (reserved never shrinks without
torch.cuda.empty_cache()), and cudaMalloc is taken to succeed: the figures are what the sequence needs.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512                  # kMinBlockSize
SMALL_SIZE = 1 << 20             # kSmallSize: the largest small-pool request
SMALL_BUFFER = 2 << 20           # kSmallBuffer
LARGE_BUFFER = 20 << 20          # kLargeBuffer
MIN_LARGE_ALLOC = 10 << 20       # kMinLargeAlloc
ROUND_LARGE = 2 << 20            # kRoundLarge


def round_size(size: int) -> int:
    """The block size a request of `size` bytes takes."""
    return MIN_BLOCK if size < MIN_BLOCK else MIN_BLOCK * -(-size // MIN_BLOCK)


def segment_size(size: int) -> int:
    """The cudaMalloc a rounded request makes when no cached block holds it."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


@dataclass(eq=False)
class _Block:
    ptr: int
    size: int
    small: bool
    prev: _Block | None = None
    next: _Block | None = None
    allocated: bool = False


@dataclass
class CachingAllocator:
    """Replays malloc / free by handle; `peak_allocated`, `peak_reserved` and `segments` are read after."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments: int = 0
    _free: dict[bool, list[tuple[int, int, _Block]]] = field(default_factory=lambda: {True: [], False: []})
    _live: dict[object, _Block | None] = field(default_factory=dict)
    _next_ptr: int = 0

    def malloc(self, handle: object, request: int) -> None:
        if handle in self._live:
            raise ValueError(f"handle {handle!r} is already allocated")
        if request == 0:   # allocate() hands out no block for 0 bytes
            self._live[handle] = None
            return
        size = round_size(request)
        small = size <= SMALL_SIZE
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            block = pool.pop(i)[2]
        else:
            seg = segment_size(size)
            block = _Block(self._next_ptr, seg, small)
            self._next_ptr += seg
            self.reserved += seg
            self.segments += 1
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = block.size - size
        if rest >= MIN_BLOCK if small else rest > SMALL_SIZE:
            tail = _Block(block.ptr + size, rest, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next, block.size = tail, size
            self._insert(tail)
        block.allocated = True
        self._live[handle] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, handle: object) -> None:
        block = self._live.pop(handle)
        if block is None:
            return
        self.allocated -= block.size
        block.allocated = False
        prev, nxt = block.prev, block.next
        if prev is not None and not prev.allocated:
            self._remove(prev)
            prev.size += block.size
            prev.next = nxt
            if nxt is not None:
                nxt.prev = prev
            block = prev
        if nxt is not None and not nxt.allocated:
            self._remove(nxt)
            block.size += nxt.size
            block.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = block
        self._insert(block)

    def _insert(self, block: _Block) -> None:
        bisect.insort(self._free[block.small], (block.size, block.ptr, block))

    def _remove(self, block: _Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, (block.size, block.ptr))
        if i == len(pool) or pool[i][2] is not block:
            raise AssertionError("a free block missing from its pool")
        pool.pop(i)
