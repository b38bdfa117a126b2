"""Study runner: k-fold splits, victim training, inversion attack, artifacts."""
