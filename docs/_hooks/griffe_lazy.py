"""Griffe extension: show griffe the names that `hhjax` and `hhjax.models` load on first use.

Both modules export some names through PEP 562 (`__getattr__`) so that `hhjax --help` answers
without importing JAX. Static analysis cannot see those names, so after the package is loaded
this extension reads each public module's runtime `__all__` and adds, for every name the
static tree lacks, an alias to the module that defines that very object.
"""

import importlib
import sys

import griffe

PUBLIC = ("hhjax", "hhjax.models", "hhjax.fitting", "hhjax.io", "hhjax.plot")


def _modules(module):
    yield module
    for member in module.members.values():
        if not member.is_alias and member.is_module:
            yield from _modules(member)


def _definition(package, name, obj):
    """Path of the griffe object that defines `obj` (found by identity at runtime)."""
    if isinstance(obj, type(sys)):
        return obj.__name__
    for module in _modules(package):
        member = module.members.get(name)
        if member is None or member.is_alias:
            continue
        runtime = sys.modules.get(module.path) or importlib.import_module(module.path)
        if vars(runtime).get(name) is obj:
            return member.path
    raise LookupError(f"no module of {package.path} defines {name!r}")


class LazyExports(griffe.Extension):
    def on_package(self, *, pkg, **kwargs):
        if pkg.path != "hhjax":
            return
        for path in PUBLIC:
            module = pkg if path == "hhjax" else pkg.get_member(path.split(".", 1)[1])
            runtime = importlib.import_module(path)
            for name in runtime.__all__:
                if name not in module.members:
                    target = _definition(pkg, name, getattr(runtime, name))
                    module.set_member(name, griffe.Alias(name, target, parent=module))
            module.exports = list(runtime.__all__)
