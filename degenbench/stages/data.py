"""Training data in TRL's conversational vision formats, and the held-out guard."""
from __future__ import annotations

from collections.abc import Iterable

import datasets
from omegaconf import DictConfig

from degenbench.documents import Document


def prompt_turn(family: DictConfig) -> list[dict]:
    """The user turn; the page itself travels in the `images` column."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": family.prompt}]}]


def answer_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def sft_dataset(family: DictConfig, docs: list[Document]) -> datasets.Dataset:
    """Prompt-completion rows (`images`, `prompt`, `completion`): loss on the JSON answer only."""
    return datasets.Dataset.from_dict({
        "doc_id": [d.id for d in docs],
        "images": [[d.load_image()] for d in docs],
        "prompt": [prompt_turn(family) for _ in docs],
        "completion": [answer_turn(d.answer) for d in docs],
    })


class LeakError(RuntimeError):
    pass


def assert_no_heldout(heldout_ids: Iterable[str], used_ids: Iterable[str], what: str) -> None:
    """Fail the run if any held-out document would be trained on."""
    leaked = sorted(set(heldout_ids) & set(used_ids))
    if leaked:
        raise LeakError(f"{len(leaked)} held-out document(s) appear in {what}: {leaked[:5]}; "
                        "held-out documents must never enter training or pairs")
