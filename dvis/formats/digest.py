"""The identity of a net's weights (:func:`weights_digest`): what a run, a checkpoint or unit images
were made with, so that nothing made with other weights is reused. Importing it loads no PyTorch
(the ``dvis`` command opens :func:`weights_cache` before a command loads anything)."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from torch import nn


_digests: dict | None = None  # weights_digest's cache while weights_cache() is active


@contextmanager
def weights_cache() -> Iterator[None]:
    """Within the block :func:`weights_digest` hashes each net's weights once, not at every call
    (precompute asks once per step and per optimized layer: minutes for ViT-H). dvis.cli runs each
    command in one. A net whose parameters or buffers are loaded anew (``load_state_dict``, any
    in-place write but one through ``.data``) is hashed again: the key holds every tensor's storage
    and version counter."""
    global _digests
    outer, _digests = _digests, {}
    try:
        yield
    finally:
        _digests = outer


def weights_digest(net: nn.Module) -> str:
    """Hash of the net's parameters and buffers: maxes of other weights must not be reused."""
    import torch  # loaded already (``net`` is a torch module); only this module's import stays light

    state = net.state_dict()
    key = None
    if _digests is not None:
        try:
            key = (id(net), tuple((n, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for n, t in state.items()))
        except RuntimeError:  # inference tensors have no version counter: not cached
            key = None
        if key in _digests:
            return _digests[key][1]
    h = hashlib.sha1()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    digest = h.hexdigest()
    if key is not None:
        _digests[key] = (net, digest)  # the net is kept alive so that its id is not reused meanwhile
    return digest
