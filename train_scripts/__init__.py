"""Training and evaluation: commands (entry points) and the library modules they share.

Commands (each a `main` in setup.cfg's console_scripts, runnable as `python -m cmelt.train_scripts.<name>`): pretrain, demo,
zero_shot, linear_probe, finetune, domain_transfer, report, label, embed, search, convert_dbeta. A command imports
library modules only, never another command (tests/test_packaging.py checks it).

Library modules: pretraining (run arguments and `pretrain`), trainer (the pretraining Trainer and its schedule),
scoring (embeddings, zero-shot scores and their evaluation), evaluation (metrics, bootstrap intervals, the results
schema), figures, datasets_registry (downstream datasets and their shared arguments), out_of_generator, profiling.
"""
