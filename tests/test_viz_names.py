"""Every chapter's plots are re-exported by mistral_nb.viz with `import *`: two submodules exporting
the same name would silently shadow one another, so names must be unique across submodules."""

import importlib
import pkgutil
from collections import defaultdict

import mistral_nb.viz as viz


def test_viz_exports_are_unique_and_resolve_to_their_module():
    owners = defaultdict(list)
    for info in pkgutil.iter_modules(viz.__path__):
        module = importlib.import_module(f"mistral_nb.viz.{info.name}")
        for name in getattr(module, "__all__", []):
            owners[name].append(info.name)
            assert getattr(viz, name) is getattr(module, name) or len(owners[name]) > 1, name
    clashes = {name: mods for name, mods in owners.items() if len(mods) > 1}
    assert not clashes, f"names exported by several viz submodules: {clashes}"


def test_every_viz_submodule_is_imported_by_the_package():
    for info in pkgutil.iter_modules(viz.__path__):
        module = importlib.import_module(f"mistral_nb.viz.{info.name}")
        for name in getattr(module, "__all__", []):
            assert hasattr(viz, name), f"mistral_nb.viz does not re-export {info.name}.{name}"
