"""What params.yaml may make the runner do to the host: the image references and the
folders a container sees are checked before any ``docker`` command is printed or run
(:mod:`rvos_kit.compute.docker` calls both).

Image references (``runner.images``) must match Docker's reference grammar,
``[registry[:port]/]name[/name...][:tag][@sha256:<64 hex>]``: a value such as
``--volume=/:/host:rw`` would otherwise be read by ``docker run`` as an option.

Mounts:

- never ``/``, the home folder, or a folder above the project root (the folder holding
  params.yaml), read-only or not, unless ``runner.allow_mounts_outside_project: true``
  says so;
- read-write only the outputs folder (``paths.outputs``) and folders inside it, whatever
  that key says.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..argtypes import NAME_MAX, REFERENCE, image_ref_error  # noqa: F401 (importable here)
from ..errors import KitError

ALLOW_KEY = "runner.allow_mounts_outside_project"

# Docker's reference grammar: rvos_kit.argtypes (the params schema checks it too).


def check_images(images: dict, where: str) -> None:
    for key, ref in images.items():
        why = image_ref_error(ref)
        if why is not None:
            raise KitError(
                f"{where}: runner.images.{key} is {ref!r}: not a Docker image reference "
                f"({why}); e.g. rvos-kit/rvos:0.1.0 or registry:5000/rvos@sha256:<64 hex>"
            )


def homes() -> set[Path]:
    """The home folder as ``$HOME`` and as the password database say."""
    out = set()
    for h in (os.environ.get("HOME"), _pw_home()):
        if h:
            out.add(Path(h).resolve())
    return out


def _pw_home() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return None


def _inside(p: Path, parent: Path) -> bool:
    return p == parent or parent in p.parents


def check_mounts(mounts, *, project: Path, outputs: Path, allow: bool, where: str,
                 sources: dict | None = None) -> None:  # fmt: skip
    """Refuse (one :class:`KitError` naming the folder, where it came from and the fix)
    what the module docstring forbids. ``mounts``: objects with ``path`` (absolute,
    resolved) and ``mode``; ``sources``: host path -> what named it, for messages."""
    project, outputs = project.resolve(), outputs.resolve()
    home = homes()
    for m in mounts:
        p = Path(m.path)
        named = (sources or {}).get(m.path, "a path the command names")
        if m.mode != "ro" and not _inside(p, outputs):
            raise KitError(
                f"{where}: {p} ({named}) would be mounted read-write into the container, "
                f"but it is not inside the outputs folder {outputs} (paths.outputs), the "
                "only folder a container may write; put the output there"
            )
        if p == Path(p.anchor):
            what = "the root folder /"
        elif p in home:
            what = "your home folder"
        elif p != project and p in project.parents:
            what = f"a folder above the project root {project}"
        else:
            continue
        if not allow:
            raise KitError(
                f"{where}: {p} ({named}) is {what}; mounting it "
                f"{'read-write' if m.mode != 'ro' else 'read-only'} would give the container "
                f"far more than the project. Point it inside the project (or at the data "
                f"folder itself), or set {ALLOW_KEY}: true in params.yaml if you mean it"
            )
