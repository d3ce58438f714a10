"""Forward hooks with guaranteed removal, and the activation functions dvis knows.

Every place that hooks a net goes through :func:`forward_hooks` (pytorch-grad-cam style: a context
manager that registers, and removes in ``finally``). Hooks only act in the thread that registered
them, so a toolbox worker's hooks never fire in another thread's forward of the same net.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn

HookFn = Callable[[str, nn.Module, tuple, object], object]


@contextmanager
def forward_hooks(net: nn.Module, names: Iterable[str], fn: HookFn, *, all_threads: bool = False) -> Iterator[None]:
    """Call ``fn(name, module, args, output)`` after each forward of each named module inside the block.

    A non-None return value replaces the module's output (as with ``register_forward_hook``).
    Exceptions raised by ``fn`` propagate out of the forward (used to stop it early). The hooks are
    removed on exit, also when the forward raises. ``all_threads=False`` (the default) ignores
    forwards run by other threads.
    """
    modules = dict(net.named_modules())
    owner = threading.get_ident()

    def make(name: str):
        def hook(module, args, output):
            if all_threads or threading.get_ident() == owner:
                return fn(name, module, args, output)
            return None
        return hook

    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def leaf_names(net: nn.Module) -> list[str]:
    """Names of the modules without children (the ones that do the computing)."""
    return [n for n, m in net.named_modules() if next(m.children(), None) is None]
