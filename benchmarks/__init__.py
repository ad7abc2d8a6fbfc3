"""Speed benchmarks (scripts, not tests): every number they report is a ratio measured in one run."""
