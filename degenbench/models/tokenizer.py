"""The stand-ins' tokenizer: one token per character, with the real architecture's special tokens
and chat template (the adapter names them)."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from degenbench.models.arch import for_arch


def _chat_template(arch: str) -> str:
    """The architecture's real chat template, as TRL ships it."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / for_arch(arch).chat_template).read_text()


# The characters a stand-in has a token of: printable ASCII, newline, and Latin-1 letters (the
# synthetic pages are Portuguese). Anything else falls back to its UTF-8 bytes, as byte-level
# tokenizers never produce an unknown token.
CHARS = ["\n", *map(chr, range(32, 127)), *(c for c in map(chr, range(0xA0, 0x100)) if c.isprintable()), "º", "ª"]


def char_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """One token per character, no merges (bytes for characters outside CHARS). A tiny model
    reads one glyph per step: each output token lines up with one visual token of the grid, where
    multi-character BPE tokens made it read several glyphs at once (results/organism/). The real
    families' tokenizers are BPE; the stand-ins' are ours to choose, the loading path is the same."""
    spec = for_arch(arch).special_tokens  # as the real tokenizer spells them
    specials = [spec["pad"], spec["eos"], *([spec["bos"]] if "bos" in spec else []), *spec["extra"]]
    chars = list(dict.fromkeys(CHARS))
    vocab = {t: i for i, t in enumerate([*specials, *chars, *(f"<0x{b:02X}>" for b in range(256))])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, fuse_unk=False))
    tok.add_special_tokens(specials)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=spec["pad"], eos_token=spec["eos"],
                                   padding_side="left", chat_template=_chat_template(arch),
                                   **for_arch(arch).tokenizer_kwargs())
