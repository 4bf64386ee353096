"""ttrl's label-free rewards inside other trainers, one file each: TRL's GRPOTrainer (`trl.py`, any number of
processes) and verl's reward loop (`verl.py`, needs verl in its own environment); `scoring.py` is what they share.
See docs/scale_out.md."""
