"""Real-size architectures with random weights on a GPU (family.size=shape): decode tokens/s at
several batch sizes against the memory-bandwidth bound, and LoRA training tokens/s with MFU and
peak memory. Speed and memory only: random weights say nothing about quality.

    python benchmarks/real_size.py --family qwen2.5-vl-3b --bandwidth-gbs 3350 --peak-tflops 989 \\
        --out results/benchmarks/real_size_qwen2.5-vl-3b.md      # H100 SXM: 3.35 TB/s, 989 bf16 TFLOP/s

Decode bound: each step reads every weight once (plus the KV cache, small at these lengths), so
tokens/s <= batch x bandwidth / weight bytes. MFU: 6 x trainable-path parameters x tokens/s over
the peak (forward + backward of the whole model: LoRA still back-propagates through it all).
"""
import argparse
import sys
import time

import torch

from common import emit
from degenbench import families
from degenbench.config import compose


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="qwen2.5-vl-3b")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (text stand-in for page + prompt)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-len", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--bandwidth-gbs", type=float, required=True, help="the GPU's memory bandwidth, GB/s")
    p.add_argument("--peak-tflops", type=float, required=True, help="the GPU's dense bf16 peak, TFLOP/s")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/real_size.py measures a GPU; none is visible here")
    cfg = compose([f"family={args.family}", "family.size=shape"])
    dev = torch.device("cuda")
    with dev:
        model = families.shape_model(cfg.family, torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    # decoding reads the language model's weights only: the vision tower ran once, at the prompt
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                       if not any(v in n for v in ("visual", "vision_tower", "multi_modal_projector")))
    vocab = model.config.get_text_config().vocab_size
    lines = [f"{n_params / 1e9:.2f}B parameters, {weight_bytes / 2**30:.1f} GiB of language-model weights; bandwidth "
             f"{args.bandwidth_gbs} GB/s, peak {args.peak_tflops} TFLOP/s (given).\n",
             "| batch | decode tokens/s | bound tokens/s | share of bound | peak memory (GiB) |", "|---|---|---|---|---|"]
    for bs in args.batch_sizes:
        ids = torch.randint(0, vocab, (bs, args.prompt), device=dev)
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(input_ids=ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           do_sample=False)
            torch.cuda.synchronize()
        tps = bs * args.new_tokens / (time.perf_counter() - t0)
        bound = bs * args.bandwidth_gbs * 1e9 / weight_bytes
        lines.append(f"| {bs} | {tps:.0f} | {bound:.0f} | {tps / bound:.1%} | "
                     f"{torch.cuda.max_memory_allocated() / 2**30:.1f} |")
        print(lines[-1], flush=True)
    from peft import LoraConfig, get_peft_model

    lora = cfg.sft.lora
    model = get_peft_model(model.train(), LoraConfig(r=lora.r, lora_alpha=lora.alpha,
                                                     target_modules=cfg.family.lora_target_modules))
    model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab, (args.train_batch, args.train_len), device=dev)
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.train_steps + 2):
        if step == 2:  # after warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    tok_s = args.train_steps * ids.numel() / (time.perf_counter() - t0)
    mfu = 6 * n_params * tok_s / (args.peak_tflops * 1e12)
    lines += ["", "| LoRA training (SFT step; DPO's is two such passes per pair) | tokens/s | MFU | peak memory (GiB) |",
              "|---|---|---|---|", f"| batch {args.train_batch} x {args.train_len}, gradient checkpointing | "
              f"{tok_s:.0f} | {mfu:.1%} | {torch.cuda.max_memory_allocated() / 2**30:.1f} |"]
    emit(f"Real-size {args.family} (random weights, bf16) on {torch.cuda.get_device_name()}", lines, args.out)


if __name__ == "__main__":
    main()
