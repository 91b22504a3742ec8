"""Training: the loop (``loop``: next-token loss, AdamW with warm-up and cosine decay, checkpoints and
resume), the English corpus as a token stream (``corpus``), and the synthetic key-recall task of the
receptive-field experiment (``tasks``)."""
