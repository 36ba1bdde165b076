"""deltatune.losses: one standalone function per loss (lm.py: causal LM on labelled positions;
logps.py: answer log-probs; preference.py: DPO / IPO / hinge / SimPO / ORPO; reward.py: Bradley-Terry)."""
