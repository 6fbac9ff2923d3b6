"""The teacher backends, one module each: `REGISTRY` maps config `teachers.{name}.backend` to its
`Backend` (restyle.teacher.base), whose attributes say what differs between backends.

Adding a backend: a module here defining `BACKEND`, its import below, and its settings in
config/schema.yaml (`teachers`; the config check fills the `backend` enum there from NAMES,
restyle.config) and in `TeacherConfig` (restyle.teacher.base). Nothing outside this package
compares a backend's name."""

from __future__ import annotations

from restyle.teacher.base import Backend, TeacherConfig, TeacherError


def _registry() -> dict[str, Backend]:
    # every backend module, imported by name so restyle.versions sees each
    from restyle.teacher import local, openai_backend

    return {m.BACKEND.name: m.BACKEND for m in (local, openai_backend)}


REGISTRY: dict[str, Backend] = _registry()
NAMES = tuple(REGISTRY)
# the backend of a writer's own teacher (restyle.study_b.checks.add_own_teachers): a model of `models`
OWN_MODEL = next(name for name, backend in REGISTRY.items() if backend.needs_model)


def get(name) -> Backend:
    """The backend `name`; an unknown one is a TeacherError."""
    if name not in REGISTRY:
        raise TeacherError(f"teacher config backend: '{name}' is not {' or '.join(NAMES)}")
    return REGISTRY[name]


def find(name) -> Backend | None:
    """The backend `name`, None for an unknown one (an unchecked config's)."""
    return REGISTRY.get(name) if isinstance(name, str) else None


def model_name(cfg: dict | TeacherConfig) -> str:
    """The name teacher `cfg`'s model goes by in cache keys, provenance and prices."""
    cfg = TeacherConfig.of(cfg)
    return get(cfg.backend).model_name(cfg)
