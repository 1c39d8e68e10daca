"""The sweep runner: flags and validation, the plan, dry run, Ray Tune, console, preflight, interrupts, generator jobs."""
