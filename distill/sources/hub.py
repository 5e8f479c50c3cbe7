"""Can a hub id in the recipe be loaded? Checked before any compute.

Offline (``HF_HUB_OFFLINE=1``) a model must be in the local Hugging Face cache (its
config.json and safetensors weights), since that is all transformers will look at. Online,
one metadata request with a short timeout tells whether the repository and revision exist:
a missing network then fails once, in seconds, instead of after the long retry loop of
``from_pretrained``. Only metadata and config.json are read, never weights.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from distill.sources.paths import SourceError

log = logging.getLogger("distill")

TIMEOUT_S = 5.0
CONFIG_FILE = "config.json"
NO_NETWORK_HINT = (
    "set HF_HUB_OFFLINE=1 and pre-download it (huggingface-cli download {repo}), "
    "or check the network"
)


class HubUnreachable(SourceError):
    """The hub could not be reached at all: further hub checks are pointless."""


def hub_offline() -> bool:
    """What huggingface_hub and transformers decide from the environment."""
    from huggingface_hub.constants import _is_true

    return _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def cache_folder(repo_id: str, repo_type: str) -> Path:
    """Where huggingface_hub keeps ``repo_id`` (``models--org--name``, ``datasets--...``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def resolved_commit(repo_id: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit a revision resolves to: the local cache's ref, else (online) the hub's
    answer within TIMEOUT_S; None when neither can tell (the stage reports load errors)."""
    wanted = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", wanted):
        return wanted
    try:
        return (cache_folder(repo_id, repo_type) / "refs" / wanted).read_text("utf-8").strip()
    except OSError:
        pass
    if hub_offline():
        return None
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(repo_id, repo_type=repo_type, revision=wanted, timeout=TIMEOUT_S)
    except Exception as exc:  # network or hub errors: the stage itself reports them properly
        log.warning("could not resolve %s@%s on the hub (%s)", repo_id, wanted, type(exc).__name__)
        return None
    return getattr(info, "sha", None)


def cached_file(repo_id: str, filename: str, revision: str | None, repo_type: str) -> Path | None:
    """``filename`` of ``repo_id`` in the local hub cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
    return Path(found) if isinstance(found, str) else None


def check_cached_model(repo_id: str, revision: str | None, key: str) -> Path:
    """Offline: the cached config.json of ``repo_id``, with safetensors weights beside it."""
    config = cached_file(repo_id, CONFIG_FILE, revision, "model")
    at = f" at revision {revision!r}" if revision else ""
    if config is None:
        raise SourceError(
            f"{key}: {repo_id!r}{at} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
            f"is set; download it first (huggingface-cli download {repo_id}) or name a folder"
        )
    if not any(config.parent.glob("*.safetensors")):
        raise SourceError(
            f"{key}: the cached copy of {repo_id!r}{at} ({config.parent}) has no .safetensors "
            "weights; download them first, or name a folder"
        )
    return config


def check_cached_dataset(dataset_id: str, key: str) -> None:
    """Offline: ``datasets`` finds the data set prepared in its own cache, or downloaded in
    the hub cache; with neither, ``load_dataset`` cannot work."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    parts = dataset_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])  # how datasets names its cache folder
    prepared = Path(datasets.config.HF_DATASETS_CACHE).expanduser() / "___".join(parts)
    downloaded = cache_folder(dataset_id, "dataset")
    if not prepared.is_dir() and not downloaded.is_dir():
        raise SourceError(
            f"{key}: hub dataset {dataset_id!r} is in neither local cache ({prepared}, "
            f"{downloaded}) and HF_HUB_OFFLINE is set; load it once online, or name a file"
        )


def check_online(repo_id: str, revision: str | None, repo_type: str, key: str) -> None:
    """One metadata request (TIMEOUT_S, no retries): the repository and revision exist."""
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = "dataset" if repo_type == "dataset" else "model"
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, timeout=TIMEOUT_S)
    except GatedRepoError:
        raise SourceError(
            f"{key}: {what} {repo_id!r} is gated; accept its terms on the hub and log in "
            "(huggingface-cli login) first"
        ) from None
    except RepositoryNotFoundError:
        raise SourceError(
            f"{key}: no {what} {repo_id!r} on the Hugging Face Hub (or it is private)"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"{key}: {what} {repo_id!r} has no revision {revision!r}") from None
    except HfHubHTTPError as exc:
        raise SourceError(
            f"{key}: the hub refused {what} {repo_id!r}: {_first_line(exc)}"
        ) from None
    except (requests.RequestException, OSError) as exc:  # no network, DNS, timeout, proxy
        raise HubUnreachable(
            f"{key}: cannot reach the Hugging Face Hub to check {what} {repo_id!r} "
            f"({type(exc).__name__}, {TIMEOUT_S:g} s timeout); "
            + NO_NETWORK_HINT.format(repo=repo_id)
        ) from None


def model_config(repo_id: str, revision: str | None) -> dict[str, Any] | None:
    """The model's config.json (cached, or downloaded alone: a few KB), or None."""
    path = cached_file(repo_id, CONFIG_FILE, revision, "model")
    if path is None and not hub_offline():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(
                hf_hub_download(repo_id, CONFIG_FILE, revision=revision, etag_timeout=TIMEOUT_S)
            )
        except Exception:  # any failure only means the config cannot be checked
            return None
    return read_config(path) if path is not None else None


def read_config(path: Path) -> dict[str, Any] | None:
    """A config.json as a dict; None when it is not one (other checks report that)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
