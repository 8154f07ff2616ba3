"""Keep ``import pytorch_lightning`` and scikit-learn from importing what a plain run never uses.

Lightning imports torchmetrics, whose package ``__init__`` imports every metric it has; its BERTScore
modules do ``from transformers import AutoModel, AutoTokenizer`` at import time whenever ``transformers``
is installed, which loads most of ``transformers`` and ``torch.distributed`` (2.5 s on 2 cores).
torchmetrics has no switch for this (no environment flag; importing one metric class runs the package
``__init__`` all the same), so a run that never touches a language model paid for one. The same holds,
smaller, for three more:

- ``scipy.signal`` (about 0.6 s): torchmetrics imports it in three places only to add
  ``scipy.signal.hamming`` for the SRMpy package (not a dependency here); with the stand-in that patch is
  skipped (the SRMR metric, with ``srmrpy`` installed, would need it);
- matplotlib (about 0.3 s, with the fonts and images it loads): only torchmetrics' plotting module imports
  it, for type hints and for ``pyplot.style.context``, which decorates its plotting functions; the
  stand-in's ``style.context`` applies the real style each time a decorated function runs, so
  ``Metric.plot()`` draws as before;
- pandas (about 0.2 s): scikit-learn's ``sklearn.utils.fixes`` imports it as ``pd`` and uses it nowhere
  (its one pandas helper takes the module as an argument).

While the importer's module executes (``IMPORTERS``), each of those modules is answered by a stand-in
whose names are deferred: each loads the real module the first time it is used (called, read, or checked
with ``isinstance``), so BERTScore and friends still work, and a run that never uses them never imports
them. The stand-ins leave ``sys.modules`` as soon as the importer is imported: the next ``import
transformers`` (a Hugging Face run) gets the real package. A family (``matplotlib`` and its submodules) is
stood in for only while none of it is imported; a stand-in used while its importer still executes (a
release of it that reads something at import time) gives way to the real module there and then: slower,
never wrong. Only the public import protocol (``importlib.abc.MetaPathFinder``, ``Loader.exec_module``) is
used.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

MATPLOTLIB = ("matplotlib", "matplotlib.axes", "matplotlib.colors", "matplotlib.pyplot")
# The module whose execution imports them -> the families of modules stood in for meanwhile.
IMPORTERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "torchmetrics": (("transformers",), ("scipy.signal",), MATPLOTLIB),
    "sklearn.utils.fixes": (("pandas",),),
}


class StandIn(types.ModuleType):
    """What ``from transformers import X`` (or ``import pandas as pd``) finds while its importer executes:
    deferred names."""

    def __init__(self, name: str, family: dict[str, StandIn]) -> None:
        super().__init__(name)
        self._family = family

    def real(self) -> types.ModuleType:
        """The real module, imported now; its family's stand-ins leave ``sys.modules`` if still there."""
        for name, stand_in in self._family.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
        return importlib.import_module(self.__name__)

    def importing(self) -> bool:
        """Its importer still executes (the stand-in is in ``sys.modules``)."""
        return sys.modules.get(self.__name__) is self

    def __getattr__(self, name: str) -> Any:
        # Meanwhile, the import system and typing probe dunders (``__path__``: a package?): not a use.
        if name.startswith("__") and name != "__version__" and self.importing():
            raise AttributeError(name)
        return getattr(self.real(), name) if name.startswith("__") else Deferred(self, name)


class Deferred:
    """A name of a stood-in module that loads the real one the first time it is used."""

    def __init__(self, module: StandIn, name: str) -> None:
        self._module = module
        self._name = name

    def resolve(self) -> Any:
        """The real object (imports its module now if nothing has yet)."""
        return getattr(self._module.real(), self._name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and self._module.importing():  # typing's probes (``Union[...]``)
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self.resolve())

    def __subclasscheck__(self, cls: type) -> bool:
        return issubclass(cls, self.resolve())

    def __repr__(self) -> str:
        return f"<deferred {self._module.__name__}.{self._name}>"


class StyleContext:
    """``pyplot.style.context(...)`` that imports pyplot and applies the style only when it is used: as a
    decorator, each time the decorated function runs (what torchmetrics does), or in a ``with``."""

    def __init__(self, pyplot: StandIn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.pyplot, self.args, self.kwargs = pyplot, args, kwargs
        self.entered: list[Any] = []

    def real(self) -> Any:
        return self.pyplot.real().style.context(*self.args, **self.kwargs)

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def styled(*args: Any, **kwargs: Any) -> Any:
            with self.real():
                return func(*args, **kwargs)

        return styled

    def __enter__(self) -> Any:
        self.entered.append(self.real())
        return self.entered[-1].__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.entered.pop().__exit__(*exc)


class Styles:
    """The stand-in pyplot's ``style``: ``context`` deferred, anything else the real ``pyplot.style``."""

    def __init__(self, pyplot: StandIn) -> None:
        self.pyplot = pyplot

    def context(self, *args: Any, **kwargs: Any) -> StyleContext:
        return StyleContext(self.pyplot, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pyplot.real().style, name)


def stand_ins(families: Sequence[tuple[str, ...]]) -> dict[str, StandIn]:
    """A stand-in for each module of every family none of whose modules is imported. A stood-in submodule
    is an attribute of its stood-in parent (``import matplotlib.axes`` then ``matplotlib.axes.Axes`` stays
    deferred), and the stand-in pyplot has the deferred ``style``."""
    made: dict[str, StandIn] = {}
    for names in families:
        if any(name in sys.modules for name in names):
            continue
        family: dict[str, StandIn] = {}
        family.update({name: StandIn(name, family) for name in names})
        made.update(family)
    for name, module in made.items():
        parent, _, child = name.rpartition(".")
        if parent in made:
            setattr(made[parent], child, module)
    if "matplotlib.pyplot" in made:
        made["matplotlib.pyplot"].style = Styles(made["matplotlib.pyplot"])  # type: ignore[attr-defined]
    return made


class StandInWhileExecuting(importlib.abc.Loader):
    """Runs the importer's real loader with the stand-ins in ``sys.modules``, then takes them out."""

    def __init__(self, inner: importlib.abc.Loader, families: Sequence[tuple[str, ...]]) -> None:
        self.inner = inner
        self.families = families

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        made = stand_ins(self.families)
        sys.modules.update(made)
        try:
            self.inner.exec_module(module)
        finally:
            for name, stand_in in made.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class DeferUnusedImports(importlib.abc.MetaPathFinder):
    """Finds each of ``IMPORTERS`` as usual, and wraps its loader in ``StandInWhileExecuting``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        families = IMPORTERS.get(fullname, ())
        if all(name in sys.modules for names in families for name in names):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = StandInWhileExecuting(spec.loader, families)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once); a no-op once every importer is imported."""
    if all(name in sys.modules for name in IMPORTERS) or any(
        isinstance(f, DeferUnusedImports) for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, DeferUnusedImports())
