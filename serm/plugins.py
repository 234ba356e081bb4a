"""Agents and drift detectors from installed packages, found through Python entry points.

A package adds a mining agent, an annotation agent or a drift detector by declaring it in its
`pyproject.toml`; the entry point's name is the name a policy uses, its object the class:

    [project.entry-points."serm.mining_agents"]
    my_miner = "my_pkg.miner:MyMiner"            # a serm.mining.base.MiningAgent subclass
    [project.entry-points."serm.annotation_agents"]
    my_judge = "my_pkg.judge:MyJudge"            # a serm.annotation.base.AnnotationAgent subclass
    [project.entry-points."serm.drift_detectors"]
    my_drift = "my_pkg.drift:MyDrift"            # a serm.plugins.DriftDetector subclass

Entry points come from the installed environment (the `.dist-info` folders on `sys.path`), so
every process of a round sees the same ones: kfp.local's subprocess stages and the cluster's
containers (bake the package into the image: the Dockerfile's `SERM_PLUGINS`).

A `Registry` holds the built-in classes of one kind plus the installed plugins. Discovery is
lazy and cached: nothing is read before the first lookup, a plugin's module is imported only
when its name is looked up (a policy lists it), and a plugin that fails to import, is not the
right kind of class, or reuses a built-in (or another package's) name raises `PluginError`
naming the entry point and its package instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from serm.errors import RegistryError

MINING_AGENTS = "serm.mining_agents"
ANNOTATION_AGENTS = "serm.annotation_agents"
DRIFT_DETECTORS = "serm.drift_detectors"
GROUPS = (MINING_AGENTS, ANNOTATION_AGENTS, DRIFT_DETECTORS)


class PluginError(RegistryError):
    """An installed plugin cannot be used. `problem` and `hint` are one line each (policy errors
    show them as a field's message and its fix)."""

    def __init__(self, problem: str, hint: str):
        self.problem, self.hint = _one_line(problem), _one_line(hint)
        super().__init__(f"{self.problem}; {self.hint}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@functools.cache
def entry_points(group: str) -> tuple:
    """The installed entry points of `group`, sorted by name (read once per process; after
    changing `sys.path`, `entry_points.cache_clear()` reads them again)."""
    from importlib.metadata import entry_points as installed

    return tuple(sorted(installed(group=group), key=lambda ep: ep.name))


def package(ep) -> str:
    """'serm-plugin-example 0.1.0 (/path/site-packages)': the distribution declaring `ep`."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown package"
    try:
        where = f" ({dist.locate_file('')})"
    except Exception:  # a distribution without a location (zip, custom finder)
        where = ""
    return f"{dist.name} {dist.version}{where}"


def _dist_name(ep) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "?"


def describe(ep) -> str:
    return f"entry point {ep.name} = {ep.value!r} (group {ep.group}) of package {package(ep)}"


class Registry(Mapping):
    """Name -> class for one kind of plugin: the built-ins, then the installed entry points of
    `group` in name order. `kind` reads in messages ("mining agent"); a loaded plugin must be a
    subclass of `base` whose `name` is its entry point's name.

    `name in registry`, `len`, iteration and `names()` read entry point names only (no plugin is
    imported); `registry[name]` imports that one plugin (once). Every access raises `PluginError`
    if two sources declare the same name: a built-in never silently wins."""

    def __init__(self, kind: str, group: str, builtins: Mapping[str, Any], base: type | None = None):
        self.kind, self.group, self.base = kind, group, base
        self._builtins = dict(builtins)
        self._loaded: dict[tuple, Any] = {}   # by (entry point, package): `entry_points` may be re-read

    def _plugins(self) -> dict:
        found: dict[str, Any] = {}
        for ep in entry_points(self.group):
            if ep.name in self._builtins:
                raise PluginError(f"{describe(ep)} uses the name of the built-in {self.kind} {ep.name!r}",
                                  f"rename the entry point in that package's pyproject.toml, or "
                                  f"`pip uninstall {_dist_name(ep)}`")
            if ep.name in found:
                raise PluginError(f"two installed packages declare the {self.kind} {ep.name!r} (group {self.group}): "
                                  f"{package(found[ep.name])} and {package(ep)}",
                                  "uninstall one of them or rename its entry point")
            found[ep.name] = ep
        return found

    def names(self) -> list[str]:
        return [*self._builtins, *self._plugins()]

    def plugin_names(self) -> list[str]:
        return list(self._plugins())

    def is_plugin(self, name: str) -> bool:
        return name not in self._builtins and name in self._plugins()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name) -> bool:
        return name in self._builtins or name in self._plugins()

    def __getitem__(self, name: str):
        if name in self._builtins:
            self._plugins()   # a plugin claiming a built-in name is an error even here
            return self._builtins[name]
        eps = self._plugins()
        if name not in eps:
            raise KeyError(name)
        key = (eps[name].value, package(eps[name]))
        if key not in self._loaded:
            self._loaded[key] = self._load(eps[name])
        return self._loaded[key]

    def _load(self, ep):
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of someone else's package
            raise PluginError(f"the {self.kind} {ep.name!r} failed to load: {type(exc).__name__}: {exc} "
                              f"[{describe(ep)}]",
                              f"fix or reinstall {_dist_name(ep)} (pip install --force-reinstall {_dist_name(ep)}), "
                              f"or remove {ep.name!r} from the policy") from exc
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(f"the {self.kind} {ep.name!r} is {obj!r}, not a {self.base.__module__}."
                              f"{self.base.__name__} subclass [{describe(ep)}]",
                              f"point the entry point at a class derived from {self.base.__name__}")
        if getattr(obj, "name", ep.name) != ep.name:
            raise PluginError(f"the {self.kind} {ep.name!r} is the class {obj.__name__} whose name is "
                              f"{obj.name!r} [{describe(ep)}]",
                              f"set `name = {ep.name!r}` on the class (the name its votes, picks and "
                              "reports carry) or rename the entry point")
        return obj

    def usable(self) -> dict[str, Any]:
        """Every name whose class loads (for listing alternatives in a message): plugins that
        fail to load are left out here and reported when a policy names them."""
        out = dict(self._builtins)
        for name in self._plugins():
            try:
                out[name] = self[name]
            except PluginError:
                pass
        return out

    def origin(self, name: str) -> str:
        """'built-in' or the entry point and package that provide `name`."""
        return "built-in" if name in self._builtins else describe(self._plugins()[name])


class DriftDetector:
    """A drift detector from an installed package (entry point group `serm.drift_detectors`).

    A policy declares it like a built-in one: `{type: NAME, threshold: ..., share_threshold:
    ..., columns: [...]}`. The drift stage hands it the per-query frames of the reference and
    of the batch: query_id, query, locale, score (the production model's top expected grade),
    impressions, clicks, ctr, mean_click_position and the query descriptors of
    `monitoring.descriptors.query_frame` (query_chars, query_tokens, unseen_token_share,
    non_ascii_share). One of two ways:

    - Per-query columns compared by Evidently (the default): `columns` names them (a policy's
      `columns:` picks among them); `add_columns` may compute them. Each column becomes an
      Evidently `ValueDrift` metric with the stattest `method` in the batch's one drift report.
      One column: the detector's value is that test's score, drifted when < `threshold` for a
      p-value method (ks, chisquare, ...) and >= `threshold` for a distance (jensenshannon,
      wasserstein, psi). Several columns: each is judged at Evidently's default threshold and
      the value is the share of drifted columns, drifted when >= `share_threshold` (like
      `query_descriptors`).
    - Its own value: override `measure(reference, current) -> float`; Evidently is not asked.
      Drifted when the value >= `threshold` (< `threshold` with `p_value = True`).

    Subclasses set class attributes only; `threshold` is the default a policy may override.
    """

    name: str = ""
    columns: tuple[str, ...] = ()
    categorical: bool = False   # the columns hold categories (Evidently's categorical stattests)
    method: str = "ks"          # the Evidently stattest of each column
    threshold: float = 0.1      # the policy's default `threshold` for this type
    p_value: bool = False       # `measure` only: the value is a p-value (drifted when < threshold)
    value_is: str = ""          # what the value is, for the drift table (default: from the method)

    def add_columns(self, reference, current):
        """(reference, current) with this detector's `columns` added. The default adds nothing:
        the columns are already in the per-query frame."""
        return reference, current

    def measure(self, reference, current) -> float:
        """Override to compute the detector's value yourself instead of Evidently."""
        raise NotImplementedError

    @classmethod
    def measures(cls) -> bool:
        """True when the class computes its own value (`measure` is overridden)."""
        return cls.measure is not DriftDetector.measure
