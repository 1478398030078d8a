"""The models: one adapter per architecture (arch/), the families and how they load, chat
messages, the tiny stand-ins (their tokenizer, recipes, build and pretraining), hub-faithful
snapshots, and the reference systems that read pages without a VLM."""
