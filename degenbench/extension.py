"""Extension points built from `_target_` (hydra.utils.instantiate): judges (conf/judge), document
sources (conf/data) and reference systems (reference.<name>). A user's own one is a class or
function in their own package, named by `_target_` in their own YAML: no fork.

A node's settings are the target's keyword arguments, less the settings degenbench reads around it
(`own`: a judge's min_score, the data split); runtime arguments (`device`, ...) are passed where the
target's signature takes them. A node without `_target_` is a shipped one named by its name
(judge.kind, data.source, the system's name), as configs were before `_target_` existed.

Errors are ValueError one-liners naming the config key and the fix, raised by `check` before any
job runs (sweep.check) and again by `build`.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

HOW = "see docs/extending.md, \"Your own judge, reference system or document source\""


def target(node: DictConfig | dict, key: str, shipped: dict[str, str], name) -> str:
    """The dotted path `node` builds: its `_target_`, else the shipped one its name stands for."""
    given = node.get("_target_")
    if given and name in shipped and given in shipped.values() and given != shipped[name]:
        # e.g. data.source=manifest over data=synthetic: the name would say one source, the target build another
        raise ValueError(f"{key} names {name!r} but its _target_ is {given!r}, another shipped one: choose it "
                         f"by its config option ({key}={name}), not by overriding the name")
    if given:
        return str(given)
    if name in shipped:
        return shipped[name]
    raise ValueError(f"{key}._target_ is not set and {name!r} is not a shipped one ({', '.join(shipped)}): "
                     f"name your class or function as {key}._target_=your_package.module.Name ({HOW})")


def locate(path: str, key: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            missing = e.name is None or module_name == e.name or module_name.startswith(e.name + ".")
            if not missing:  # the module exists, but an import inside it fails
                raise ValueError(f"{key}._target_={path!r}: its module is found, but importing it fails ({e}); "
                                 "install what it imports") from e
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ValueError(f"{key}._target_={path!r}: {getattr(obj, '__name__', module_name)} has no "
                                 f"{attr!r}; check the name ({HOW})")
            obj = getattr(obj, attr)
        return obj
    raise ValueError(f"{key}._target_={path!r} cannot be imported: give module.Name of a class or function "
                     f"importable here (its package installed or on PYTHONPATH) ({HOW})")


def check(node: DictConfig | dict, key: str, shipped: dict[str, str], name, what: str,
          needs: Iterable[str] = (), own: Iterable[str] = (), runtime: Iterable[str] = ()) -> object:
    """The located target, refused in one line where it is not importable, not callable, a class
    without the methods a `what` has (`needs`), or one that does not take the node's settings (less
    `own`; with the `runtime` arguments it takes). A function's result is checked when built."""
    path = target(node, key, shipped, name)
    obj = locate(path, key)
    if not callable(obj):
        raise ValueError(f"{key}._target_={path!r} is a {type(obj).__name__}, not a class or function: "
                         f"name a {what} ({HOW})")
    lacking = [m for m in needs if isinstance(obj, type) and not callable(getattr(obj, m, None))]
    if lacking:
        raise ValueError(f"{key}._target_={path!r} is not a {what}: it has no {', '.join(lacking)} method "
                         f"({HOW})")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature to check against: the call says what is wrong
        return obj
    settings = {k: None for k in node if k not in own and not str(k).startswith("_")}  # names, not values
    settings |= {k: None for k in _accepts(obj, runtime)}
    try:
        sig.bind_partial(**settings) if node.get("_partial_") else sig.bind(**settings)
    except TypeError as e:  # a typo in the YAML, or a required setting it lacks: the config's fault
        raise ValueError(f"{key}: {path} does not take these settings ({e}); its parameters are {sig}") from e
    return obj


def _accepts(obj, names: Iterable[str]) -> set[str]:
    """Which of `names` the callable's signature takes (all, with **kwargs)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass none
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return set(names)
    return set(names) & {p.name for p in params}


def build(node: DictConfig | dict, key: str, shipped: dict[str, str], name, what: str,
          own: Iterable[str] = (), needs: Iterable[str] = (), **runtime):
    """hydra.utils.instantiate of the node's `_target_` with its settings less `own`, and those of
    `runtime` that the target takes. A setting it does not take, or one left `???`, is a one-line
    error naming the key; an error raised by the target itself is raised as it is."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    obj = check(node, key, shipped, name, what, needs, own, runtime)
    path = target(node, key, shipped, name)
    node = node if isinstance(node, DictConfig) else OmegaConf.create(node)
    unset = [k for k in node if k not in own and OmegaConf.is_missing(node, k)]
    if unset:
        raise ValueError(f"{key}.{unset[0]} is not set: give it in your config or as {key}.{unset[0]}=...")
    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in own}
    settings["_target_"] = path
    passed = {k: runtime[k] for k in _accepts(obj, runtime)}
    try:
        return instantiate(OmegaConf.create(settings), **passed)
    except InstantiationException as e:
        if e.__cause__ is not None:
            raise e.__cause__  # the target's own error (it names what is wrong), not Hydra's wrapper
        raise


def key_spec(node: DictConfig | dict, shipped: dict[str, str], name) -> dict:
    """The node as artifact keys hold it: `_target_` is left out where it is the shipped one its
    name stands for, so shipped configs keep the keys they had before `_target_`; any other target
    (a user's own) is part of the key."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if spec.get("_target_") == shipped.get(name):
        spec.pop("_target_")
    return spec
