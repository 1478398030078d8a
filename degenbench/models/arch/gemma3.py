"""Gemma3 (gemma-3-4b-it): every page is resized to one fixed square (pan-and-scan off) and fills
a fixed number of image tokens; the chat template writes <bos>."""
from __future__ import annotations

import json

from omegaconf import DictConfig

from degenbench.models.arch.base import PAPER_WHITE, Adapter


class Gemma3(Adapter):
    arch = "gemma3"
    special_tokens = {"pad": "<pad>", "eos": "<end_of_turn>", "bos": "<bos>",
                      "extra": ["<eos>", "<start_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]}
    chat_template = "gemma3.jinja"

    def fit_processor(self, processor, family, source):
        size = processor.image_processor.size  # the square every page is resized to
        return (size["height"] * size["width"],) * 2

    def tokenizer_kwargs(self):
        return {"bos_token": "<bos>", "extra_special_tokens": {
            "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}}

    def standin_config(self, tok, a: DictConfig):
        from transformers import AutoConfig

        ids = tok.convert_tokens_to_ids
        text = dict(
            vocab_size=len(tok), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
            num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
            head_dim=a.hidden_size // a.heads, query_pre_attn_scalar=a.hidden_size // a.heads,
            max_position_embeddings=4096, sliding_window=512,
            pad_token_id=ids("<pad>"), eos_token_id=[ids("<end_of_turn>"), ids("<eos>")], bos_token_id=ids("<bos>"),
        )
        vision = dict(hidden_size=a.vision_hidden, intermediate_size=2 * a.vision_hidden,
                      num_hidden_layers=a.vision_depth, num_attention_heads=a.vision_heads,
                      image_size=a.image_size, patch_size=a.patch_size, vision_use_head=False)
        return AutoConfig.for_model(
            "gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=a.mm_tokens_per_image,
            boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
            image_token_index=ids("<image_soft_token>"),
        )

    def standin_processor(self, family, tok):
        """Pages keep their grid shape (no square resize): with patch 28 each patch is one glyph
        cell, and (image_size / patch_size)^2 patches fill the learned position table exactly."""
        from transformers import Gemma3ImageProcessor, Gemma3Processor

        a = family.standin
        image = Gemma3ImageProcessor(size={"height": a.page.rows * a.page.cell, "width": a.page.cols * a.page.cell},
                                     **PAPER_WHITE)
        return Gemma3Processor(image_processor=image, tokenizer=tok, chat_template=tok.chat_template,
                               image_seq_length=a.mm_tokens_per_image)

    def fit_snapshot(self, folder, preprocessor_config):
        """Gemma3's vision tower has a learned position table for a fixed input size. The published
        processor sends 896x896 pages and 256 image tokens; the stand-in was trained on 8x8 patch
        positions and 64 tokens. Its table is interpolated to the published grid (patch size kept)
        and the projector pools to 256 tokens: the published input then runs through the stand-in."""
        import torch
        from safetensors.torch import load_file, save_file

        pre = preprocessor_config
        config = json.loads((folder / "config.json").read_text())
        vision, side = config["vision_config"], pre["size"]["height"]
        if vision["image_size"] == side and config["mm_tokens_per_image"] == pre["image_seq_length"]:
            return None
        old_n, new_n = vision["image_size"] // vision["patch_size"], side // vision["patch_size"]
        weights = load_file(folder / "model.safetensors")
        name = next(k for k in weights if k.endswith("embeddings.position_embedding.weight"))
        grid = weights[name].T.reshape(1, -1, old_n, old_n)  # (old_n * old_n, hidden) as a grid
        weights[name] = torch.nn.functional.interpolate(grid, size=(new_n, new_n), mode="bicubic",
                                                        align_corners=False).reshape(-1, new_n * new_n).T.contiguous()
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        vision["image_size"], config["mm_tokens_per_image"] = side, pre["image_seq_length"]
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return {"vision_config.image_size": [old_n * vision["patch_size"], side],
                "mm_tokens_per_image": [old_n * old_n, pre["image_seq_length"]],
                "position_table": f"{old_n}x{old_n} -> {new_n}x{new_n} (bicubic)"}

    def image_tokens(self, family):
        # the real input's tokens (the memory estimate is of the real architecture)
        return int(family.sizes.shape.config.mm_tokens_per_image)
