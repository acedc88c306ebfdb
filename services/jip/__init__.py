"""JIP, the Joint Imaging Platform."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]) -> Callable[[str], object]:
    """A package's module ``__getattr__`` that imports each public name's module on first use.

    ``exports`` maps each module to the public names it defines. A service package's
    ``__init__`` lists its public names this way (and imports them under
    ``TYPE_CHECKING`` for the type checker), so that a process importing one small part
    of a service (a DICOM listener needs the catalog, not the HTTP routes) does not
    import all of it: the listener answers sooner after a restart and stays smaller.
    """

    modules = {name: module for module, names in exports.items() for name in names}
    # Importing a submodule binds its name on the package, and __getattr__ is asked only
    # for names the package lacks: a name shared with a submodule would be the module.
    shadowed = sorted(set(modules) & {module.rpartition(".")[2] for module in exports})
    if shadowed:
        raise ValueError(f"{package}: {shadowed} would be shadowed by submodules")

    def __getattr__(name: str) -> object:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next lookup finds it directly
        return value

    return __getattr__
