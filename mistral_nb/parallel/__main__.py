"""``torchrun --nproc-per-node N -m mistral_nb.parallel CHECKPOINT --prompt TEXT`` (see ``cli.py``)."""

from mistral_nb.parallel.cli import main

main()
