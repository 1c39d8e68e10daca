"""sweeps/study.py --dry-run: each experiment's trials and GPU-hours (synthaug.sweep.dry_run's estimate of its plan), then
the study's totals, each generator instance counted once however many experiments it serves. Nothing is started,
downloaded or written."""

from __future__ import annotations

import os

from synthaug.study.experiments import FIDELITY, STUDY_SEEDS, StudyPlan


def print_study_dry_run(study: StudyPlan, gpu_model: str, benchmarks: str | None) -> None:
    from synthaug.sweep.dry_run import _duration, plan_hours
    from synthaug.training.benchmarks import cpu_row, default_path, find_throughput

    row = find_throughput(benchmarks or default_path(), gpu_model)
    cpu = cpu_row(study.preset.name)
    data = study.outline
    print(f"study {study.id} (dry run: nothing started, nothing written): {study.run_name}")
    print(f"data {data.name}: {len(data.train_y)} train / {len(data.test_y)} test images, {data.num_classes} classes; "
          f"seeds {', '.join(map(str, study.seeds))}"
          + (f" (the study's {study.preset.name} default; the preset alone runs {study.preset.seeds})"
             if study.preset.name in STUDY_SEEDS and len(study.seeds) != study.preset.seeds else ""))
    print(f"estimate on {row.describe()}" + (" (assumed, not measured)" if row.assumed else "") + ":\n")
    gens: dict[str, float] = {}
    cpu_gens: dict[str, float] = {}
    trials = 0
    gpu_h = {"pools": 0.0, "trials": 0.0}
    cpu_h = {"pools": 0.0, "trials": 0.0}
    for item in study.items:
        if item.script == FIDELITY:
            continue
        plan = study.plans[item.id]
        hours = plan_hours(plan, data, row)
        mine = sum(h for g, h in hours.trainings.items() if g not in gens)
        gens.update(hours.trainings)
        gpu_h["pools"] += hours.pools_h
        gpu_h["trials"] += hours.trials_h
        here = ""
        if cpu is not None and not plan.unavailable:     # what cannot run here is not in this machine's time
            on_cpu = plan_hours(plan, data, cpu)
            new = sum(h for g, h in on_cpu.trainings.items() if g not in cpu_gens)
            cpu_gens.update(on_cpu.trainings)
            cpu_h["pools"] += on_cpu.pools_h
            cpu_h["trials"] += on_cpu.trials_h
            here = (f"; on this machine about {_duration(on_cpu.trials_h + on_cpu.pools_h + new)} (trials "
                    f"{_duration(on_cpu.trials_h)})")
        trials += len(plan.configs)
        cells = len(plan.configs) // len(plan.seeds)
        print(f"  {item.id:7} {item.script:18} {len(plan.configs):5} trials = {cells} configurations x "
              f"{len(plan.seeds)} seeds, {len(plan.arms)} arms ({', '.join(plan.arms) or 'no arms: a grid'}); "
              f"trials {hours.trials_h:.2f} GPU-h, pools {hours.pools_h:.2f} GPU-h, generators and labellers "
              f"not counted above {mine:.2f} GPU-h{here}; sweep {plan.name}")
        for problem in plan.unavailable:
            print(f"          would be left out on this machine: {problem}")
    if study.fidelity is not None:
        from synthaug.sweep.dry_run import fidelity_hours

        hours = fidelity_hours(study.fidelity.preset, data, row, study.fidelity.samples_per_class)
        mine = sum(h for g, h in hours.trainings.items() if g not in gens)
        gens.update(hours.trainings)
        gpu_h["pools"] += hours.pools_h
        here = ""
        if cpu is not None:
            on_cpu = fidelity_hours(study.fidelity.preset, data, cpu, study.fidelity.samples_per_class)
            new = sum(h for g, h in on_cpu.trainings.items() if g not in cpu_gens)
            cpu_gens.update(on_cpu.trainings)
            cpu_h["pools"] += on_cpu.pools_h
            here = f"; on this machine about {_duration(on_cpu.pools_h + new)} before its scores"
        print(f"  {'E5':7} {FIDELITY:18} {study.fidelity.samples_per_class} samples a class of each generator of the "
              f"preset usable here: samples {hours.pools_h:.2f} GPU-h, generators and labellers not counted above "
              f"{mine:.2f} GPU-h{here}; its feature scores are not in the estimate")
    total_gen = sum(gens.values())
    total = total_gen + gpu_h["pools"] + gpu_h["trials"]
    gpus = max(study.preset.gpus or 1, 1)
    wall = total_gen / min(gpus, max(len(gens), 1)) + gpu_h["pools"] + gpu_h["trials"] / gpus
    print(f"\ntotal: {trials} trials; {total:.2f} GPU-h (generators and labellers {total_gen:.2f} GPU-h, {len(gens)} "
          f"trainings, each counted once however many experiments use it; pools and samples {gpu_h['pools']:.2f}; "
          f"trials {gpu_h['trials']:.2f})")
    print(f"wall time on {row.device}: about {_duration(wall)} on {gpus} GPU{'s' * (gpus > 1)} "
          f"(one experiment after another)")
    if cpu is None:
        print(f"wall time on this machine: no estimate (no CPU row of the {study.preset.name} preset's size in "
              f"BENCHMARKS.md; bench/gpu_suite.py --size {study.preset.name} --device cpu measures one)")
    else:
        cpus = os.cpu_count() or 1
        generators = sum(cpu_gens.values()) / min(cpus, max(len(cpu_gens), 1))     # side by side, a CPU each
        out = [i.id for i in study.items if i.id in study.plans and study.plans[i.id].unavailable]
        without = f" (without {', '.join(out)}, which cannot run here)" if out else ""
        print(f"wall time on this machine's {cpus} CPUs{without} ({cpu.describe()}): about "
              f"{_duration(generators + cpu_h['pools'] + cpu_h['trials'])} (generators {_duration(generators)}, "
              f"pools and samples {_duration(cpu_h['pools'])}, trials {_duration(cpu_h['trials'])})")
    print("each sweep's own plan in detail: python sweeps/<script>.py --dry-run with the same flags")
