"""Fine-tuning the local brain on the project's own traces (docs/finetune.md).

traces (saved sessions and synthesized requests → chat JSONL that TRL's SFTTrainer reads, and its checks),
synth (requests for every tool from ``prompts/finetune_requests.yaml``), score (tool-call accuracy of a model on
held-out traces), train (peft + TRL: lora, qlora, prefix, freeze). Nothing here imports torch until it trains.
"""
