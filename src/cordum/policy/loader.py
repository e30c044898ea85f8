"""Loading policies: one file, a directory of bundles, or bundles handed over in memory.

Every path ends in the same validation, so a bundle that fails here also fails when the
API is asked to publish it. Loading either returns a complete, compiled policy or raises
:class:`PolicyLoadError` with every problem found; nothing half-loaded is ever returned.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cordum.policy.bundles import MergedPolicy, merge_documents
from cordum.policy.engine import Policy
from cordum.policy.errors import PolicyIssue, PolicyLoadError
from cordum.policy.schema import DIALECT_CORDUM
from cordum.policy.source import (
    DEFAULT_MAX_BYTES,
    decode_policy_bytes,
    parse_yaml,
    read_policy_bytes,
)
from cordum.policy.validate import LoadedDocument, validate_document
from cordum.policy.velocity import VelocityStore

POLICY_SUFFIXES = (".yaml", ".yml")
BASE_BUNDLE = "base"
TEST_FILE_SUFFIXES = ("_test.yaml", "_test.yml")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a policy is built.

    Loading allocates hundreds of thousands of objects and frees no cycles, yet every
    allocation burst triggers collections whose cost grows with the whole heap: in a
    long-running control plane they doubled load time. Reference counting still frees
    everything; the collector is restored exactly as the caller had it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(
    source: str | os.PathLike[str],
    *,
    dialect: str = DIALECT_CORDUM,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    velocity_store: VelocityStore | None = None,
) -> Policy:
    """Load a policy from a file, a directory of bundles, or YAML text.

    A :class:`pathlib.Path` is always a path. A string containing a newline is YAML text;
    any other string is a path (so a mistyped file name is an error, not an empty policy).
    """
    if isinstance(source, str) and "\n" in source:
        return load_text(
            source,
            dialect=dialect,
            strict=strict,
            max_bytes=max_bytes,
            velocity_store=velocity_store,
        )
    merged = read_merged(Path(source), dialect=dialect, strict=strict, max_bytes=max_bytes)
    return Policy(merged, velocity_store=velocity_store, dialect=dialect)


def load_text(
    text: str,
    *,
    name: str = "<policy>",
    dialect: str = DIALECT_CORDUM,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    velocity_store: VelocityStore | None = None,
) -> Policy:
    """Load a policy from YAML text; ``name`` is used in error messages."""
    with _collector_paused():
        document = _validate_text(text, name, dialect=dialect, strict=strict, max_bytes=max_bytes)
        return Policy(merge_documents([document]), velocity_store=velocity_store, dialect=dialect)


def load_bundles(
    bundles: Mapping[str, str],
    *,
    dialect: str = DIALECT_CORDUM,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    velocity_store: VelocityStore | None = None,
) -> Policy:
    """Load a policy from bundles ``{bundle_id: yaml_text}``, merged in key order."""
    with _collector_paused():
        merged = merge_bundle_texts(bundles, dialect=dialect, strict=strict, max_bytes=max_bytes)
        return Policy(merged, velocity_store=velocity_store, dialect=dialect)


def merge_bundle_texts(
    bundles: Mapping[str, str],
    *,
    dialect: str = DIALECT_CORDUM,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> MergedPolicy:
    """Validate every bundle (reporting all their problems together) and merge them."""
    named = [(bundle_id, bundles[bundle_id]) for bundle_id in bundle_order(bundles)]
    return _validate_all(named, dialect=dialect, strict=strict, max_bytes=max_bytes)


def read_merged(
    path: Path,
    *,
    dialect: str = DIALECT_CORDUM,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> MergedPolicy:
    """Read and validate a policy file or directory without compiling it."""
    try:
        is_directory = path.is_dir()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyLoadError(
            [
                PolicyIssue(
                    code="file_unreadable",
                    message=f"not a usable path: {reason}",
                    file=str(path)[:200],
                )
            ]
        ) from None
    if is_directory:
        files = bundle_files(path)
        if not files:
            raise PolicyLoadError(
                [
                    PolicyIssue(
                        code="no_bundles",
                        message="directory holds no .yaml or .yml policy files",
                        file=str(path),
                    )
                ]
            )
        texts: dict[str, str] = {}
        issues: list[PolicyIssue] = []
        for bundle_id, file in files.items():
            try:
                texts[bundle_id] = decode_policy_bytes(
                    read_policy_bytes(file, max_bytes), str(file)
                )
            except PolicyLoadError as exc:
                issues.extend(exc.issues)
        named = [(str(files[bundle_id]), text) for bundle_id, text in texts.items()]
        try:
            merged = _validate_all(named, dialect=dialect, strict=strict, max_bytes=max_bytes)
        except PolicyLoadError as exc:
            raise PolicyLoadError([*issues, *exc.issues]) from None
        if issues:
            raise PolicyLoadError(issues)
        return merged
    text = decode_policy_bytes(read_policy_bytes(path, max_bytes), str(path))
    document = _validate_text(text, str(path), dialect=dialect, strict=strict, max_bytes=max_bytes)
    return merge_documents([document])


def bundle_files(directory: Path) -> dict[str, Path]:
    """Policy files under ``directory`` keyed by bundle id, the base first, then key order.

    A bundle's id is its path relative to the directory without the suffix
    (``secops/deny-exfil``). A top-level ``base.yaml`` is the base and is merged first.
    Policy test fixtures (``*_test.yaml``) and hidden files are not bundles.
    """
    found: dict[str, Path] = {}
    for file in sorted(directory.rglob("*")):
        if (
            file.suffix not in POLICY_SUFFIXES
            or not file.is_file()
            or file.name.endswith(TEST_FILE_SUFFIXES)
            or _hidden(file, directory)
        ):
            continue
        bundle_id = file.relative_to(directory).with_suffix("").as_posix()
        if bundle_id in found:
            raise PolicyLoadError(
                [
                    PolicyIssue(
                        code="duplicate_bundle_id",
                        message=f"`{found[bundle_id].name}` and `{file.name}` are both bundle"
                        f" `{bundle_id}`; one would silently replace the other",
                        file=str(file),
                        hint="rename or remove one of them",
                    )
                ]
            )
        found[bundle_id] = file
    return {bundle_id: found[bundle_id] for bundle_id in bundle_order(found)}


def bundle_order(bundle_ids: Iterable[str]) -> list[str]:
    """Merge order: the ``base`` bundle first, then the others in key order."""
    return sorted(bundle_ids, key=lambda bundle_id: (bundle_id != BASE_BUNDLE, bundle_id))


def _hidden(file: Path, directory: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(directory).parts)


def _validate_all(
    named_texts: Iterable[tuple[str, str]], *, dialect: str, strict: bool, max_bytes: int
) -> MergedPolicy:
    documents: list[LoadedDocument] = []
    issues: list[PolicyIssue] = []
    for name, text in named_texts:
        try:
            documents.append(
                _validate_text(text, name, dialect=dialect, strict=strict, max_bytes=max_bytes)
            )
        except PolicyLoadError as exc:
            issues.extend(exc.issues)
    if issues:
        raise PolicyLoadError(issues)
    return merge_documents(documents)


def _validate_text(
    text: str, name: str, *, dialect: str, strict: bool, max_bytes: int
) -> LoadedDocument:
    return validate_document(parse_yaml(text, name, max_bytes), dialect=dialect, strict=strict)
