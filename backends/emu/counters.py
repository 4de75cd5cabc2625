"""Memory-system counters of the GPU emulator, as pure functions of warp-wide accesses.

An *access* is one warp-wide instruction: a ``(groups, width)`` array of byte addresses
(one row per warp instruction, one column per element it touches) with a mask of the
elements really accessed (active threads, valid loads).

Shared memory: 32 banks of 4 bytes. A warp access takes as many wavefronts as the most
distinct 4-byte words any one bank must serve (the same word is a broadcast); the ideal is
one wavefront per 128 distinct bytes. Extra wavefronts = wavefronts - ideal: stride-1
floats give 0, a stride-32 float column 31, a row padded to 33 floats 0.

Global memory: requests are served in 32-byte sectors. Requested = distinct sectors
touched; minimum = the distinct bytes packed densely (ceil(bytes / 32)). Their ratio
says how far from coalesced the access is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BANKS, BANK_BYTES, SECTOR = 32, 4, 32


def _distinct_sorted(keys: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sorted keys with duplicates and masked entries marked invalid."""
    k = np.where(mask, keys, np.iinfo(np.int64).max).astype(np.int64)
    k.sort(axis=1)
    first = np.ones_like(k, dtype=bool)
    first[:, 1:] = k[:, 1:] != k[:, :-1]
    return k, first & (k != np.iinfo(np.int64).max)


def bank_wavefronts(addr: np.ndarray, mask: np.ndarray, itemsize: int) -> tuple[int, int]:
    """(wavefronts, ideal wavefronts) summed over the rows (warp instructions) of a
    shared-memory access; rows with no active element cost nothing."""
    addr = np.atleast_2d(addr); mask = np.broadcast_to(np.atleast_2d(mask), addr.shape)  # noqa: E702
    if addr.size == 0: return 0, 0
    # every 4-byte word an element overlaps (elements of 8/16 bytes span several words)
    nwords = max(1, itemsize // BANK_BYTES)
    words = (addr // BANK_BYTES)[..., None] + np.arange(nwords)
    words = words.reshape(addr.shape[0], -1)
    m = np.repeat(mask, nwords, axis=1)
    k, uniq = _distinct_sorted(words, m)
    rows = np.nonzero(uniq)[0]
    banks = k[uniq] % BANKS
    per_bank = np.bincount(rows * BANKS + banks, minlength=addr.shape[0] * BANKS).reshape(-1, BANKS)
    waves = per_bank.max(axis=1)
    distinct_words = uniq.sum(axis=1)
    ideal = -(-distinct_words * BANK_BYTES // (BANKS * BANK_BYTES))
    return int(waves.sum()), int(ideal.sum())


def sectors(addr: np.ndarray, mask: np.ndarray, itemsize: int) -> tuple[int, int]:
    """(32-byte sectors requested, minimum sectors) summed over the rows of a global access."""
    addr = np.atleast_2d(addr); mask = np.broadcast_to(np.atleast_2d(mask), addr.shape)  # noqa: E702
    if addr.size == 0: return 0, 0
    # an element may straddle sectors only if misaligned; elements are itemsize-aligned
    _, first_sec = _distinct_sorted(addr // SECTOR, mask)
    _, first_el = _distinct_sorted(addr, mask)
    nbytes = first_el.sum(axis=1) * itemsize
    return int(first_sec.sum()), int((-(-nbytes // SECTOR)).sum())


@dataclass
class Counters:
    """Per run of a Program on the emulator (over the blocks it executed)."""
    blocks_run: int = 0
    blocks_total: int = 0
    shared_wavefronts: int = 0
    shared_ideal: int = 0
    global_sectors: int = 0
    global_min_sectors: int = 0
    global_bytes: int = 0
    races: int = 0            # shared reads/writes of a word another thread wrote since the last barrier
    instructions: dict[str, int] = field(default_factory=dict)  # warp instructions by class

    @property
    def bank_conflicts(self) -> int:
        """Extra shared-memory wavefronts caused by bank conflicts."""
        return self.shared_wavefronts - self.shared_ideal

    @property
    def coalescing(self) -> float:
        """Minimum / requested global sectors (1.0 = perfectly coalesced)."""
        return self.global_min_sectors / self.global_sectors if self.global_sectors else 1.0

    def count(self, cls: str, n: int) -> None:
        if n: self.instructions[cls] = self.instructions.get(cls, 0) + int(n)

    def to_dict(self) -> dict:
        return {"blocks_run": self.blocks_run, "blocks_total": self.blocks_total,
                "bank_conflicts": self.bank_conflicts, "shared_wavefronts": self.shared_wavefronts,
                "shared_ideal": self.shared_ideal, "global_sectors": self.global_sectors,
                "global_min_sectors": self.global_min_sectors, "global_bytes": self.global_bytes,
                "coalescing": round(self.coalescing, 4), "races": self.races,
                "instructions": dict(sorted(self.instructions.items()))}
