"""`make bench`: every figure btcl2 reports, each as a ratio against a bound measured in the same run."""
