"""The worklist: studies in the order a radiologist should read them."""
