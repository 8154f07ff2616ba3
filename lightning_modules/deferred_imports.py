"""Keep ``import pytorch_lightning`` from importing ``transformers`` (2.5 s on 2 cores) and ``scipy.signal``.

Lightning imports torchmetrics, whose package ``__init__`` imports every metric it has; its BERTScore
modules do ``from transformers import AutoModel, AutoTokenizer`` at import time whenever ``transformers``
is installed, which loads most of ``transformers`` and ``torch.distributed``. torchmetrics has no switch
for this (no environment flag; importing one metric class runs the package ``__init__`` all the same), so
a run that never touches a language model paid for one. While torchmetrics' own modules execute,
``transformers`` is answered by a stand-in whose names are deferred: each loads the real class the first
time it is used (called, read, or checked with ``isinstance``), so BERTScore and friends still work, and a
run that never uses them never imports ``transformers``. The stand-in leaves ``sys.modules`` as soon as
torchmetrics is imported: the next ``import transformers`` (a Hugging Face run) gets the real package.
``scipy.signal`` (about 0.6 s) is treated the same way: torchmetrics imports it in three places only to
add ``scipy.signal.hamming`` for the SRMpy package (not a dependency here); with the stand-in that patch is
skipped (the SRMR metric, with ``srmrpy`` installed, would need it). Only the public import protocol
(``importlib.abc.MetaPathFinder``, ``Loader.exec_module``) is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

DEFERRED = ("transformers", "scipy.signal")
IMPORTER = "torchmetrics"


class Deferred:
    """A name of a deferred module that loads the real one the first time it is used."""

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def resolve(self) -> Any:
        """The real object (imports its module now if nothing has yet)."""
        return getattr(importlib.import_module(self._module), self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.resolve(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self.resolve())

    def __subclasscheck__(self, cls: type) -> bool:
        return issubclass(cls, self.resolve())

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


class StandIn(types.ModuleType):
    """What ``from transformers import X`` finds while torchmetrics imports: a deferred ``X``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Deferred(self.__name__, name)


class StandInWhileExecuting(importlib.abc.Loader):
    """Runs torchmetrics' real loader with the stand-ins in ``sys.modules``, then takes them out."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        stand_ins = {name: StandIn(name) for name in DEFERRED if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            self.inner.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class DeferTransformersInTorchmetrics(importlib.abc.MetaPathFinder):
    """Finds torchmetrics as usual, and wraps its loader in ``StandInWhileExecuting``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != IMPORTER or all(name in sys.modules for name in DEFERRED):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = StandInWhileExecuting(spec.loader)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once); a no-op once torchmetrics is imported."""
    if IMPORTER in sys.modules or any(isinstance(f, DeferTransformersInTorchmetrics) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, DeferTransformersInTorchmetrics())
