"""The evaluator: C, A and the gap C - A on the shifted split (see ``capgap.eval.rollout``)."""
