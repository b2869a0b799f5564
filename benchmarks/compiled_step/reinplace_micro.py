# ruff: noqa: E402
import sys

import torch

torch.set_num_threads(1)
import torch._inductor.config as cfg

cfg.cpp.simdlen = 1
N = 4096 * 3 * 169
flat = torch.zeros(N, dtype=torch.uint8)
i = torch.randint(0, N, (4096,))
j = torch.randint(0, N, (4096,))
one = torch.ones((), dtype=torch.uint8)


def read_then_put(flat, i, j):
    r = flat.index_select(0, i)
    flat.index_put_((j,), one)
    return r * 2


def read_then_fill(flat, i, j):
    r = flat.index_select(0, i)
    flat.index_fill_(0, j, 1)
    return r * 2


def read_put_read(flat, i, j):
    r = flat.index_select(0, i)
    flat.index_put_((j,), one)
    return r + flat.index_select(0, i)


def rows(obs, ids, bank):  # row scatter with padded ids
    r = obs.view(-1).index_select(0, ids)
    obs.index_put_((ids,), bank.index_select(0, ids))
    return r


f = {"read_then_put": read_then_put, "read_then_fill": read_then_fill, "read_put_read": read_put_read}[sys.argv[1]]
torch.compile(f, dynamic=False, fullgraph=True)(flat, i, j)
