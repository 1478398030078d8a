"""A real-size architecture with random weights on a GPU (family.size=shape) on A4 pages through the
family's own processor: decode tokens/s at several batch sizes against the memory-bandwidth
bound, then one LoRA SFT step and one DPO step through TRL's trainers (degenbench's training
rows and collators) with tokens/s, MFU and peak memory. Speed and memory only: random weights
say nothing about quality. One command, a few minutes on one H100/H200:

    python benchmarks/real_size.py --family qwen2.5-vl-3b --bandwidth-gbs 4800 --peak-tflops 989 \\
        --out results/benchmarks/real_size_qwen2.5-vl-3b.md     # H200: 4.8 TB/s, 989 dense bf16 TFLOP/s
    python benchmarks/real_size.py --smoke                      # the same code on the CPU, tiny stand-in

Decode bound: each step reads every language-model weight once and each row's KV cache, so
tokens/s <= batch x bandwidth / (weight bytes + batch x KV bytes at the mean context).
MFU counts the language model's parameters N: an SFT step with LoRA costs 4N FLOPs per token
(forward 2N, activation gradients 2N; LoRA has no weight gradients to speak of; recomputation by
gradient checkpointing not counted), a DPO step 6N (plus the reference forward pass).
"""
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from common import emit, parser, setup
from degenbench.models import families
from degenbench.config import compose
from degenbench.documents import synthetic
from degenbench.documents.record import make_document
from degenbench.models.chat import encode, input_stats
from degenbench.stages.data import preference_texts, sft_dataset, with_images, page_ref

p = parser(__doc__)
p.add_argument("--family", default="qwen2.5-vl-3b")
p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
p.add_argument("--new-tokens", type=int, default=128)
p.add_argument("--loop-tokens", type=int, default=1024, help="length of the DPO step's rejected loop")
p.add_argument("--bandwidth-gbs", type=float, default=4800, help="the GPU's memory bandwidth, GB/s (H200: 4800)")
p.add_argument("--peak-tflops", type=float, default=989, help="the GPU's dense bf16 peak, TFLOP/s (H100/H200: 989)")
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if not args.smoke and not torch.cuda.is_available():
    sys.exit("benchmarks/real_size.py measures a GPU; none is visible here (--smoke runs it on the CPU)")
size = "tiny" if args.smoke else "shape"
if args.smoke:
    args.batch_sizes, args.new_tokens, args.loop_tokens = [1, 2], 4, 16
cfg = compose([f"family={args.family}", f"family.size={size}", "device=cpu" if args.smoke else "device=cuda",
               "sft.trainer.max_steps=3", "dpo.trainer.max_steps=3", "sft.trainer.per_device_train_batch_size=1", "dpo.trainer.per_device_train_batch_size=1", "logger=disabled"])
dev = torch.device("cpu" if args.smoke else "cuda")
model, processor = families.load(cfg.family, str(dev))
lm = [p for n, p in model.named_parameters() if not any(v in n for v in ("visual", "vision_tower", "multi_modal_projector"))]
n_lm, weight_bytes = sum(p.numel() for p in lm), sum(p.numel() * p.element_size() for p in lm)
text = model.config.get_text_config()
kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * getattr(
    text, "head_dim", text.hidden_size // text.num_attention_heads) * 2
fields = synthetic.a4_fields(max(args.batch_sizes), seed=0, repetitive=0.3)
docs = [make_document(f"a4-{i}", f, None, f"a4 page {i}", image=synthetic.render_a4(f)) for i, f in enumerate(fields)]
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if dev.type == "cuda" else (lambda: float("nan"))
reset = torch.cuda.reset_peak_memory_stats if dev.type == "cuda" else (lambda: None)

lines = [f"{type(model).__name__} ({size}), {n_lm / 1e9:.2f}B language-model parameters ({weight_bytes / 2**30:.1f} GiB), "
         f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B in all; A4 pages (1240x1754) at max_pixels "
         f"{cfg.family.max_pixels}; bandwidth {args.bandwidth_gbs} GB/s and peak {args.peak_tflops} TFLOP/s as given.\n",
         "| decode batch | prompt tokens (image tokens) | new tokens | tokens/s | bound tokens/s | share of bound | peak GiB |",
         "|---|---|---|---|---|---|---|"]
for bs in args.batch_sizes:
    inputs = encode(processor, cfg.family, [d.image for d in docs[:bs]]).to(dev)
    stats = input_stats(inputs["input_ids"], inputs["attention_mask"], processor)[0]
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
               pad_token_id=processor.tokenizer.pad_token_id)
    reset()
    with torch.inference_mode():
        model.generate(**inputs, **(gen | {"max_new_tokens": 2, "min_new_tokens": 2}))  # warm-up
        sync()
        t0 = time.perf_counter()
        model.generate(**inputs, **gen)
        sync()
    tps = bs * args.new_tokens / (time.perf_counter() - t0)
    context = inputs["input_ids"].shape[1] + args.new_tokens / 2
    bound = bs * args.bandwidth_gbs * 1e9 / (weight_bytes + bs * kv_per_token * context)
    lines.append(f"| {bs} | {stats['prompt_tokens']} ({stats['image_tokens']}) | {args.new_tokens} | {tps:.0f} | "
                 f"{bound:.0f} | {tps / bound:.1%} | {peak():.1f} |")
    print(lines[-1], flush=True)
del model
torch.cuda.empty_cache() if dev.type == "cuda" else None


class StepTimer(TrainerCallback):
    """Wall clock of each optimizer step (the first is warm-up) and the tokens of its batches."""

    def __init__(self):
        self.times, self.start = [], None

    def on_step_begin(self, args, state, control, **kw):
        sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        sync()
        self.times.append(time.perf_counter() - self.start)


def measure(stage: str, trainer_of) -> str:
    timer = StepTimer()
    reset()
    trainer, inputs = trainer_of(timer)
    trainer.train()
    steps = timer.times[1:] or timer.times
    tokens = sum(r["prompt_tokens"] for r in inputs.rows) / len(timer.times)  # per step (rows of all steps)
    tps = tokens / (sum(steps) / len(steps))
    flops = (4 if stage == "SFT" else 6) * n_lm * tps
    return (f"| {stage} (LoRA, batch {trainer.args.per_device_train_batch_size}, checkpointing "
            f"{trainer.args.gradient_checkpointing}) | {tokens:.0f} | {sum(steps) / len(steps):.2f} | {tps:.0f} | "
            f"{flops / (args.peak_tflops * 1e12):.1%} | {peak():.1f} |")


def sft_trainer(timer):
    from trl import SFTConfig, SFTTrainer

    from degenbench.stages.training import InputStats, lora_config, trainer_config
    model, processor = families.load(cfg.family, str(dev))
    out = Path(tempfile.mkdtemp())
    trainer = SFTTrainer(model=model.train(), args=trainer_config(SFTConfig, cfg, cfg.sft.trainer, out, []),
                         train_dataset=sft_dataset(cfg.family, docs[:3]), processing_class=processor,
                         peft_config=lora_config(cfg), callbacks=[timer])
    trainer.data_collator = inputs = InputStats(trainer.data_collator, processor)
    return trainer, inputs


def dpo_trainer(timer):
    from peft import get_peft_model
    from trl import DPOConfig, DPOTrainer

    from degenbench.stages.training import InputStats, lora_config, trainer_config
    model, processor = families.load(cfg.family, str(dev))
    model = get_peft_model(model.train(), lora_config(cfg))
    loop = '{"header": "", "margin": "", "footer": "", "text": "' + ". " * args.loop_tokens
    rows = {"doc_id": [], "images": [], "prompt": [], "chosen": [], "rejected": []}
    for d in docs[:3]:
        rows["doc_id"].append(d.id)
        rows["images"].append([page_ref(d)])
        for k, v in preference_texts(processor, cfg.family, d.answer, loop, rejected_finished=False).items():
            rows[k].append(v)
    out = Path(tempfile.mkdtemp())
    trainer = DPOTrainer(model=model, ref_model=None, args=trainer_config(DPOConfig, cfg, cfg.dpo.trainer, out, []),
                         train_dataset=with_images(rows), processing_class=processor, callbacks=[timer])
    trainer.data_collator = inputs = InputStats(trainer.data_collator, processor)
    return trainer, inputs


lines += ["", "| training step | tokens per step | seconds per step | tokens/s | MFU | peak GiB |", "|---|---|---|---|---|---|"]
for stage, make in (("SFT", sft_trainer), ("DPO", dpo_trainer)):
    lines.append(measure(stage, make))
    print(lines[-1], flush=True)
device = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU (smoke run: no figures)"
emit(f"Real-size {args.family} (random weights, {cfg.family.dtype}) on {device}", lines, args.out)
