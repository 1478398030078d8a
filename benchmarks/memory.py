"""Estimated peak GPU memory of one SFT and one DPO micro-batch on each real family
(degenbench/tools/memory.py: activations counted on the meta device from the real architecture's
autograd graph, no GPU needed), with family.size=real's defaults and with the defaults that
applied before they existed (batch 4 for SFT and DPO, no gradient checkpointing).

    python benchmarks/memory.py --out results/benchmarks/memory.md
"""
from common import emit, parser, setup
from degenbench.tools import memory
from degenbench.config import compose
from degenbench.config import known_families

p = parser(__doc__)
p.add_argument("--max-new-tokens", type=int, default=4096, help="the generation budget (data.max_new_tokens)")
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:
    args.max_new_tokens = 256
OLD = ["sft.trainer.per_device_train_batch_size=4", "sft.trainer.gradient_accumulation_steps=1", "dpo.trainer.per_device_train_batch_size=4", "dpo.trainer.gradient_accumulation_steps=1",
       "sft.trainer.activation_checkpointing=false", "dpo.trainer.activation_checkpointing=false"]
lines = ["| family | settings | stage | micro-batch (rows x tokens) | checkpointing | weights | LoRA + AdamW | layer activations | "
         "LM head + loss | reference logits | workspace | **total GiB** |", "|---" * 12 + "|"]
for name in known_families()[:1] if args.smoke else known_families():
    for label, extra in (("size=real defaults", []), ("before (batch 4, no checkpointing)", OLD)):
        cfg = compose([f"family={name}", "family.size=real", "data=manifest", "data.path=-",
                       f"data.max_new_tokens={args.max_new_tokens}", *extra])
        for stage in ("sft", "dpo"):
            e = memory.estimate(cfg, stage)
            lines.append(f"| {name} | {label} | {stage} | {e['rows']} x {e['sequence_tokens']} | {e['gradient_checkpointing']} | "
                         f"{e['weights']} | {e['lora_and_adamw']} | {e['layer_activations']} | {e['head_and_loss']} | "
                         f"{e.get('reference_logits', '-')} | {e['workspace']} | **{e['total_gib']}** |")
            print(lines[-1], flush=True)
emit(f"Estimated peak GPU memory per training micro-batch (GiB), LoRA r 16, bf16, pages at family max_pixels, "
     f"completions of {args.max_new_tokens} tokens", lines, args.out)
