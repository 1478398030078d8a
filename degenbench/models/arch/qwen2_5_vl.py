"""Qwen2.5-VL (Qwen2.5-VL-3B/7B-Instruct and their fine-tunes): pages are resized within the
family's pixel bounds to 28-px visual tokens, by qwen-vl-utils in the chat and by the processor."""
from __future__ import annotations

from omegaconf import DictConfig

from degenbench.models.arch.base import PAPER_WHITE, Adapter

TOKEN_PX = 28  # one visual token: 14-px patches merged 2x2


class Qwen2_5_VL(Adapter):
    arch = "qwen2_5_vl"
    vision_utils = "qwen"
    special_tokens = {"pad": "<|endoftext|>", "eos": "<|im_end|>",
                      "extra": ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]}
    chat_template = "qwen2_5_vl.jinja"

    def fit_processor(self, processor, family, source):
        """A hub preprocessor_config.json's own min_pixels / max_pixels override a `size` given to
        from_pretrained (Qwen2VLImageProcessor.__init__ even writes them into the dict it was given,
        which the processor then passes to every call): the bounds are set on the loaded image
        processor, and a processor that keeps image kwargs of its own is refused."""
        from transformers.image_utils import SizeDict

        kept = {k for k in ("size", "min_pixels", "max_pixels") if k in (getattr(processor, "images_kwargs", None) or {})}
        if kept:
            raise ValueError(f"{source}'s processor passes {sorted(kept)} to every call, overriding the family's bounds")
        processor.image_processor.size = SizeDict(shortest_edge=family.min_pixels, longest_edge=family.max_pixels)
        size = processor.image_processor.size
        return size["shortest_edge"], size["longest_edge"]

    def image_entry(self, family, image):
        # qwen-vl-utils resizes within these bounds, to 28-px tokens
        return super().image_entry(family, image) | {"min_pixels": family.min_pixels, "max_pixels": family.max_pixels}

    def vision_inputs(self, chats, images):
        from qwen_vl_utils import process_vision_info

        return process_vision_info(chats)[0]

    def page_check(self, family, processor):
        """qwen-vl-utils' limits: an aspect ratio up to 200, a page large enough to resize."""
        from qwen_vl_utils.vision_process import smart_resize

        images = getattr(processor, "image_processor", None)
        factor = getattr(images, "patch_size", 14) * getattr(images, "merge_size", 2)  # 28-px tokens

        def check(page):
            try:
                smart_resize(page.height, page.width, factor, family.min_pixels, family.max_pixels)
            except (ValueError, ZeroDivisionError) as e:
                raise ValueError(str(e)) from e
        return check

    def tokenizer_kwargs(self):
        return {"extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                         "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}}

    def standin_config(self, tok, a: DictConfig):
        from transformers import AutoConfig

        ids = tok.convert_tokens_to_ids
        text = dict(
            vocab_size=len(tok), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
            num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
            max_position_embeddings=4096, tie_word_embeddings=True,
            # mrope sections (temporal, height, width) must add up to head_dim / 2. They take the
            # rotary frequencies in that order, highest first: a tiny model reads a line only if the
            # width section gets some fast ones, hence few temporal/height frequencies.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(a.mrope_section)},
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        )
        vision = dict(depth=a.vision_depth, hidden_size=a.vision_hidden, intermediate_size=2 * a.vision_hidden,
                      num_heads=a.vision_heads, out_hidden_size=a.hidden_size, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[a.vision_depth - 1])
        return AutoConfig.for_model(
            "qwen2_5_vl", text_config=text, vision_config=vision, tie_word_embeddings=True,
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        )

    def standin_processor(self, family, tok):
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        px = family.sizes.tiny
        image = Qwen2VLImageProcessor(size={"shortest_edge": px.min_pixels, "longest_edge": px.max_pixels}, **PAPER_WHITE)
        return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                                   chat_template=tok.chat_template)

    def vllm_kwargs(self, family):
        # the same bounds as the HF processor and TRL's collators
        return {"mm_processor_kwargs": {"min_pixels": family.min_pixels, "max_pixels": family.max_pixels}}

    def image_tokens(self, family):
        return family.max_pixels // TOKEN_PX**2
