"""Import-time fixes for the simulator stack on Python 3.11, each in one documented place.

Nothing here edits files of other packages except :func:`ensure_metadrive_offline_assets`, which
creates MetaDrive's two-file asset marker on first use when the real assets are absent (see its
docstring). Every fix is idempotent and applied lazily, the first time a simulator is needed, so
``import envs`` stays fast and works without the simulators installed.

``import envs`` installs :func:`install_import_hooks`: from then on a plain ``import
safety_gymnasium`` or ``import dsrl`` anywhere (user code, DSRL's own scripts) gets the same fixes
at the moment it runs, so the order of imports does not matter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def _numpy_defaults_as_factories() -> Iterator[None]:
    """Temporarily let ``@dataclass`` accept numpy-array class defaults.

    safety-gymnasium 1.0.0 declares dataclass fields such as ``color: np.ndarray = np.array(...)``.
    Python 3.11 rejects every unhashable default ("mutable default <class 'numpy.ndarray'> for
    field ... is not allowed"), so importing it fails. While the package is imported, each such
    default is turned into a ``default_factory`` that returns a copy, which is what the authors
    meant; ``dataclasses.dataclass`` is restored afterwards.
    """
    original = dataclasses.dataclass

    def _convert(cls: type) -> type:
        for name, value in list(vars(cls).items()):
            if isinstance(value, np.ndarray):
                setattr(cls, name, dataclasses.field(default_factory=value.copy))
        return cls

    def patched(cls: type | None = None, /, **kwargs):  # type: ignore[no-untyped-def]
        if cls is None:
            return lambda inner: original(_convert(inner), **kwargs)
        return original(_convert(cls), **kwargs)

    dataclasses.dataclass = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        dataclasses.dataclass = original


#: What to install for each simulator (the package's extras; see pyproject.toml).
INSTALL_HINTS = {
    "bullet": 'pip install "safe-agents[bullet]"',
    "safety_gymnasium": 'pip install "safe-agents[safety-gymnasium]" and then '
    "pip install --no-deps safety-gymnasium==1.0.0 (its own pygame==2.1.0 pin has no Python "
    "3.11 wheel)",
    "metadrive": 'pip install "safe-agents[metadrive]"',
}
SIMULATOR_NAMES = {
    "bullet": "Bullet-Safety-Gym",
    "safety_gymnasium": "Safety-Gymnasium",
    "metadrive": "MetaDrive",
}


class MissingDependencyError(ImportError):
    """An optional dependency a task needs is not installed; the message says how to install it."""


class SimulatorNotInstalledError(MissingDependencyError):
    """A task's simulator (or one of its libraries) is not installed; the message says how to."""

    def __init__(self, task_id: str, simulator: str, missing: str | None) -> None:
        name = SIMULATOR_NAMES.get(simulator, simulator)
        what = f" (no module {missing!r})" if missing else ""
        super().__init__(
            f"{task_id} runs on {name}, which is not installed here{what}: "
            f"{INSTALL_HINTS.get(simulator, 'run scripts/install.sh')}. "
            "scripts/install.sh installs every simulator.",
            name=missing,
        )
        self.task_id, self.simulator = task_id, simulator


def import_safety_gymnasium() -> ModuleType:
    """Import safety-gymnasium 1.0.0 on Python 3.11 (see :func:`_numpy_defaults_as_factories`)."""
    if "safety_gymnasium" in sys.modules:
        return sys.modules["safety_gymnasium"]
    install_import_hooks()
    return importlib.import_module("safety_gymnasium")  # the hook applies the fix


def import_bullet_safety_gym() -> ModuleType:
    """Import bullet-safety-gym 1.4.0 so it works when ``sys.stdout`` is not the C stdout.

    Its ``RedirectStream`` flushes the C stream named after ``sys.stdout.name``; under pytest's
    capture, a notebook or any redirected stdout that name is not a C symbol and every env
    constructor raises ``ValueError: undefined symbol``. The flush is kept for the real
    ``<stdout>``/``<stderr>`` and skipped otherwise (the redirect itself still works). A stdout
    with no file descriptor at all (an ``io.StringIO``) is not redirected, where every env
    constructor raised ``io.UnsupportedOperation: fileno``.
    """
    if "bullet_safety_gym" in sys.modules:
        return sys.modules["bullet_safety_gym"]
    # The builder module redirects stderr at import time: import it with the real streams.
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        builder = importlib.import_module("bullet_safety_gym.envs.builder")
        module = importlib.import_module("bullet_safety_gym")
    finally:
        sys.stdout, sys.stderr = saved
    flush = builder.RedirectStream._flush_c_stream

    def flush_real_streams_only(stream) -> None:  # type: ignore[no-untyped-def]
        if getattr(stream, "name", None) in ("<stdout>", "<stderr>"):
            flush(stream)

    builder.RedirectStream._flush_c_stream = staticmethod(flush_real_streams_only)
    # The redirect duplicates the stream's file descriptor; a stream without one
    # (contextlib.redirect_stdout(io.StringIO()), pytest's capsys) is left as it is.
    enter, leave = builder.RedirectStream.__enter__, builder.RedirectStream.__exit__

    def enter_if_real(self) -> None:  # type: ignore[no-untyped-def]
        self.redirected = _has_file_descriptor(self.stream)
        if self.redirected:
            enter(self)

    def exit_if_entered(self, *exc_info) -> None:  # type: ignore[no-untyped-def]
        if self.redirected:
            leave(self, *exc_info)

    builder.RedirectStream.__enter__ = enter_if_real
    builder.RedirectStream.__exit__ = exit_if_entered
    return module


def _has_file_descriptor(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last
        return False
    return True


def import_dsrl_infos() -> ModuleType | None:
    """Return ``dsrl.infos`` (DSRL's reference returns/costs), or None if dsrl is absent.

    ``import dsrl`` registers DSRL's own environments, which import safety-gymnasium with its
    0.4.0 module names (``tasks.safety_velocity``; 1.0.0 calls it ``safe_velocity``) and MetaDrive
    through the old ``gym`` package. The safety-gymnasium modules are aliased so those imports
    succeed, and dsrl is told not to print its warning about the missing ``gym``.
    """
    if "dsrl.infos" in sys.modules:
        return sys.modules["dsrl.infos"]
    install_import_hooks()
    try:
        return importlib.import_module("dsrl.infos")  # the hook prepares the import
    except ImportError:
        return None


def _prepare_dsrl_import() -> None:
    """What ``import dsrl`` needs first (see :func:`import_dsrl_infos`)."""
    try:
        safety_gymnasium = import_safety_gymnasium()
    except ImportError:
        safety_gymnasium = None
    if safety_gymnasium is not None and "safety_gymnasium.tasks.safety_velocity" not in sys.modules:
        velocity = importlib.import_module("safety_gymnasium.tasks.safe_velocity")
        sys.modules["safety_gymnasium.tasks.safety_velocity"] = velocity
        for name in list(sys.modules):
            if name.startswith("safety_gymnasium.tasks.safe_velocity."):
                alias = name.replace(".safe_velocity.", ".safety_velocity.")
                sys.modules[alias] = sys.modules[name]
        for submodule in (
            "safety_ant_velocity_v1",
            "safety_half_cheetah_velocity_v1",
            "safety_hopper_velocity_v1",
            "safety_swimmer_velocity_v1",
            "safety_walker2d_velocity_v1",
        ):
            module = importlib.import_module(f"safety_gymnasium.tasks.safe_velocity.{submodule}")
            sys.modules[f"safety_gymnasium.tasks.safety_velocity.{submodule}"] = module
    try:
        import_bullet_safety_gym()
    except ImportError:
        pass
    os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")


class _FixedLoader(importlib.abc.Loader):
    """Runs another loader's ``exec_module`` with a fix in place; everything else delegated."""

    def __init__(self, loader: Any, fix: Callable[[], contextlib.AbstractContextManager]) -> None:
        self._loader = loader
        self._fix = fix

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with self._fix():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_data, is_package, resource readers, ...
        return getattr(self._loader, name)


@contextlib.contextmanager
def _dsrl_prepared() -> Iterator[None]:
    _prepare_dsrl_import()
    yield


class _CompatFinder(importlib.abc.MetaPathFinder):
    """Finds the packages that need a fix with the other finders and wraps their loader."""

    FIXES: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
        "safety_gymnasium": _numpy_defaults_as_factories,
        "dsrl": _dsrl_prepared,
    }

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        fix = self.FIXES.get(fullname)
        if fix is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _FixedLoader(spec.loader, fix)
                return spec
        return None


def install_import_hooks() -> None:
    """Make ``import safety_gymnasium`` and ``import dsrl`` work on Python 3.11 from anywhere.

    Idempotent. Packages already imported are left as they are.
    """
    if not any(isinstance(finder, _CompatFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CompatFinder())


def ensure_metadrive_offline_assets() -> Path:
    """Make MetaDrive 0.4.3 run headless, with state observations, without downloading assets.

    At its first reset MetaDrive checks ``metadrive/assets/version.txt`` and the file
    ``textures/grass1/GroundGrassGreen002_COL_1K.jpg`` and, if either is missing, downloads its
    asset archive (unreachable offline). State observations and physics need neither. When the
    real assets are absent, this writes exactly those two files (an empty texture) and a
    ``SAFE_AGENTS_STUB`` marker, so rendering code can tell that the real assets are needed.
    Real assets, when present, are left untouched. Returns the asset folder.
    """
    from metadrive.version import VERSION

    from safe_agents.common.fileio import atomic_write

    assets = _metadrive_assets()
    version_file = assets / "version.txt"
    texture = assets / "textures" / "grass1" / "GroundGrassGreen002_COL_1K.jpg"
    if version_file.exists() and texture.exists():
        return assets
    try:
        if not texture.exists():  # an empty texture; a real one is never replaced
            atomic_write(texture, b"")
        stub = (
            "Written by safe-agents (envs/_compat.py): MetaDrive's real assets are absent; state\n"
            "observations work, rendering needs the real assets (python -m metadrive.pull_asset).\n"
        )
        atomic_write(assets / "SAFE_AGENTS_STUB", stub)
        # The version file goes last: it is what MetaDrive checks first.
        atomic_write(version_file, VERSION)
    except OSError as error:
        raise RuntimeError(
            f"MetaDrive's asset folder {assets} is not writable, and MetaDrive would try to "
            f"download its assets at the first reset: {error}"
        ) from error
    _LOG.info("MetaDrive assets absent: wrote the offline marker files in %s", assets)
    return assets


def _metadrive_assets() -> Path:
    return Path(str(importlib.import_module("metadrive").__file__)).parent / "assets"


def metadrive_has_real_assets() -> bool:
    """Whether MetaDrive's full asset set (needed for rendering) is installed."""
    assets = _metadrive_assets()
    return (assets / "version.txt").exists() and not (assets / "SAFE_AGENTS_STUB").exists()
