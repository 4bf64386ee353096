"""ttrl's label-free rewards inside other trainers (TRL's GRPOTrainer; VERL next), one file each."""
