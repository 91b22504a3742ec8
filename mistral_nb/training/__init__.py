"""Training: the loop (``loop``: next-token loss, AdamW with warm-up and cosine decay, checkpoints and
resume), the English corpus as a token stream (``corpus``), the synthetic key-recall task of the
receptive-field experiment (``tasks``), and fine-tuning: SFT data in the chat format, packing and the
``fit`` loop (``sft``), DPO (``dpo``), and instructions computed from real text (``instructions``)."""
