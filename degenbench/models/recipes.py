"""What defines a stand-in (its recipe) and the recipe's fingerprint: shipped bases are used only
when it matches; a recipe may continue a parent's base or its own earlier phases."""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

BUILD_VERSION = 4  # bump when the recipe changes what a build makes: cached stand-ins are rebuilt


def parent(family: DictConfig) -> DictConfig | None:
    """The family whose base this one continues from (continued pretraining), if any."""
    if not family.standin.base.parent:
        return None
    from degenbench.config import compose

    return compose([f"family={family.standin.base.parent}"]).family


def earlier(family: DictConfig) -> DictConfig | None:
    """The same family one continued phase earlier (`base.then` without its last entry): the base
    this one's last phase starts from. A recipe that only appends a phase therefore starts from
    the base its earlier phases made, shipped or cached, as a child starts from its parent."""
    then = list(family.standin.base.get("then") or [])
    if not then:
        return None
    earlier = OmegaConf.create(OmegaConf.to_container(family, resolve=True))
    earlier.standin.base.then = then[:-1]
    return earlier


def recipe(family: DictConfig) -> dict:
    """What defines a stand-in: its architecture and base-training blocks, the task prompt it is
    pretrained on in part, its parent's recipe, and the recipe version."""
    up = parent(family)
    standin = OmegaConf.to_container(family.standin, resolve=True)
    standin.pop("cache_dir")  # where it is cached does not change what it is
    if not standin["base"].get("then"):  # no continued phase: the same recipe as before `then` existed
        standin["base"].pop("then", None)
    return {"v": BUILD_VERSION, "arch": family.arch, "standin": standin, "prompt": family.prompt,
            "parent": recipe_hash(up) if up is not None else None,
            "pixels": [family.sizes.tiny.min_pixels, family.sizes.tiny.max_pixels]}


def recipe_hash(family: DictConfig) -> str:
    """The recipe's fingerprint: shipped bases are used only when it matches."""
    return hashlib.sha256(json.dumps(recipe(family), sort_keys=True).encode()).hexdigest()[:16]


def differs(family: DictConfig) -> list[str]:
    """The recipe's fields (dotted) that differ from conf/family/<name>.yaml's, which made the
    shipped base: what an override changed that forces a build (e.g. `prompt`)."""
    from hydra.errors import MissingConfigException

    from degenbench.config import compose

    def walk(a, b, at: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) for d in walk(a.get(k), b.get(k), f"{at}.{k}".lstrip("."))]
        return [] if a == b else [at]
    try:
        return walk(recipe(family), recipe(compose([f"family={family.name}"]).family), "")
    except MissingConfigException:  # not a conf/family option: nothing to compare with
        return []
