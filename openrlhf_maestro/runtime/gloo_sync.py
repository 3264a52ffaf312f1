"""A gloo process group for the DeepSpeed -> vLLM weight broadcast, standing in for vLLM's PyNccl group.

OpenRLHF 0.11.2 builds the weight-sync group with ``stateless_init_process_group`` (utils/distributed_util.py
13-26): a vLLM ``StatelessProcessGroup`` wrapped in ``PyNcclCommunicator``, whose only method OpenRLHF
calls is ``broadcast(tensor, src, stream)``. NCCL needs CUDA. This group has the same call surface on
gloo and, like the original, stays outside ``torch.distributed``'s default group (DeepSpeed owns that
one in the trainer, vLLM in its workers).
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist


def _local_address_towards(host: str, port: int) -> str:
    """The address of this machine's interface that routes to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class GlooBroadcastGroup:
    """Rank 0 is the trainer (DeepSpeed rank 0); ranks 1..world_size-1 are vLLM workers."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int, timeout_s: float = 600):
        timeout = timedelta(seconds=timeout_s)
        self.rank = rank
        self.world_size = world_size
        self._store = dist.TCPStore(master_address, master_port, world_size, is_master=(rank == 0), timeout=timeout)
        options = dist.ProcessGroupGloo._Options()
        options._timeout = timeout
        options._devices = [
            dist.ProcessGroupGloo.create_device(hostname=_local_address_towards(master_address, master_port))
        ]
        self._pg = dist.ProcessGroupGloo(self._store, rank, world_size, options)

    def broadcast(self, tensor: torch.Tensor, src: int, stream: object = None) -> None:
        """In-place broadcast of ``tensor`` from rank ``src``; ``stream`` is accepted for PyNccl parity."""
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        opts.rootTensor = 0
        self._pg.broadcast([tensor], opts).wait()


def stateless_init_process_group(
    master_address: str, master_port: int, rank: int, world_size: int, device: object = None
) -> GlooBroadcastGroup:
    """Drop-in for ``openrlhf.utils.distributed_util.stateless_init_process_group`` (``device`` is ignored)."""
    return GlooBroadcastGroup(master_address, master_port, rank, world_size)
