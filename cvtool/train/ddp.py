"""DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m cvtool train ...`` starts N copies of the same command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each copy loads the data, builds the same network
(same seed) and trains on its shard of every batch: the global batch (``--batch``) is cut into
N interleaved slices; DDP averages the gradients. The backend is gloo on CPU and NCCL on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``). Validation is sharded too and the confusion matrices
summed. Only rank 0 writes files or prints; every rank stops at the same batch on Ctrl-C.
Batch-norm statistics stay per process (what DDP does without SyncBatchNorm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_sum(t).item() > 0)

    def broadcast(self, obj):
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def from_env(device: str) -> Dist:
    """A :class:`Dist` for this process: single-process unless torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local, backend)


def shard(indices: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's slice of a batch (interleaved, so every rank gets nearly the same count)."""
    return indices[d.rank::d.world] if d.enabled else indices
